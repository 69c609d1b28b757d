"""The inference log's row layout: batches of logged predictions as one Arrow table."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from .common import json_dumps
from .journal import plain_values
from .log_layout import feature_column


class Batch:
    """Records of one ``log`` call, as the caller gave them (a frame or a list of records)."""

    __slots__ = ("frame", "ids", "timestamps", "predictions", "scores", "probabilities")

    def __init__(self, frame: Any, ids: Sequence[str], timestamps: Sequence[float], predictions: Any,
                 scores: Any, probabilities: Sequence[Any] | None = None) -> None:
        self.frame = frame
        self.ids = ids
        self.timestamps = timestamps
        self.predictions = predictions
        self.scores = scores
        self.probabilities = probabilities


def _features(batches: list[Batch], schema: Any) -> Any:
    """One Arrow table of the batches' inputs: record lists in one pass, frames as they are."""
    import pyarrow as pa

    tables = []
    run: list[dict[str, Any]] = []
    for batch in batches:
        if isinstance(batch.frame, list):
            run.extend(batch.frame)
            continue
        if run:
            tables.append(pa.Table.from_pylist(run, schema=schema))
            run = []
        table = pa.Table.from_pandas(batch.frame, preserve_index=False)
        if schema is not None:
            table = table.select([n for n in schema.names if n in table.column_names])
            table = table.cast(pa.schema([schema.field(n) for n in table.column_names]), safe=False)
        tables.append(table)
    if run:
        tables.append(pa.Table.from_pylist(run, schema=schema))
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")

def batches_table(batches: list[Batch], schema: Any, model_name: str, model_version: str, source: str
                  ) -> tuple[Any, list[int]]:
    """One Arrow table of the log's columns for the batches, and each row's timestamp in microseconds."""
    import numpy as np
    import pyarrow as pa

    features = _features(batches, schema)
    n = features.num_rows
    ids = list(itertools.chain.from_iterable(b.ids for b in batches))
    seconds = np.fromiter(itertools.chain.from_iterable(b.timestamps for b in batches), dtype="float64", count=n)
    preds = np.concatenate([np.asarray(b.predictions).reshape(-1) for b in batches])
    if all(b.scores is None for b in batches):
        scores = np.full(n, np.nan)
    else:
        scores = np.concatenate([np.full(len(b.ids), np.nan) if b.scores is None
                                 else np.asarray(b.scores, dtype="float64").reshape(-1) for b in batches])
    probas = list(itertools.chain.from_iterable(plain_values(b.probabilities, len(b.ids)) for b in batches))
    micros = (seconds * 1e6).astype("int64")
    columns: dict[str, Any] = {
        "request_id": pa.array(ids, pa.string()),
        "timestamp": pa.array(micros, pa.timestamp("us", tz="UTC")),
        "model_name": pa.array([model_name] * n, pa.string()),
        "model_version": pa.array([model_version] * n, pa.string()),
        "source": pa.array([source] * n, pa.string()),
    }
    for name, col in zip(features.column_names, features.columns, strict=True):
        columns[feature_column(name)] = col
    columns["prediction"] = pa.array(preds.tolist() if preds.dtype == object else preds)
    columns["score"] = pa.array(scores, pa.float64())
    columns["probabilities"] = pa.array([None if q is None else json_dumps(q).decode() for q in probas],
                                        pa.string())
    return pa.table(columns), micros.tolist()
