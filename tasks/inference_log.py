"""The inference log: every prediction, written durably in batches to Parquet partitioned by day and hour.

This module is the log's public face: the readers monitoring uses (:func:`read_inference_log`,
:func:`read_ground_truth`, :func:`inference_log_stats`), :func:`attach_ground_truth` for labels that
arrive later, and, re-exported, the writer (:class:`InferenceLogWriter`, which batch scoring uses
and the serving process runs) and :func:`recover_journals`. The writer, its journal and the layout
both sides share (column names, ``date=/hour=`` partitions, folder names) live in the private
package ``tasks._serving`` (``log_writer``, ``journal``, ``log_layout``), which every bento carries,
so the serving process writes the log without importing Prefect or anything else of ours.

Layout, rows and guarantees: see ``tasks/_serving/log_layout.py`` and ``tasks/_serving/journal.py``.
In short, an acknowledged prediction survives SIGKILL (the journal is written before the answer),
one bad record never takes another with it (it is kept in ``<model>/_rejected/`` and counted), and
files appear atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks._serving.journal import JournalError, RecordError, arrow_schema, recover_journals
from tasks._serving.log_layout import (
    BASE_COLUMNS,
    DATE_DIR,
    HOUR_DIR,
    JOURNAL_DIR,
    LABEL_COLUMNS,
    LABELS_DIR,
    OUTPUT_COLUMNS,
    PREDICTIONS_DIR,
    REJECTED_DIR,
    RESERVED_COLUMNS,
    STATS_DIR,
    default_log_dir,
    feature_column,
    model_dir_name,
    model_root,
    partition_path,
    to_utc,
    write_parquet_atomic,
)
from tasks._serving.log_writer import InferenceLogWriter

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "BASE_COLUMNS", "JOURNAL_DIR", "LABELS_DIR", "LABEL_COLUMNS", "OUTPUT_COLUMNS", "PREDICTIONS_DIR", "REJECTED_DIR",
    "RESERVED_COLUMNS", "STATS_DIR", "InferenceLogWriter", "JournalError", "RecordError", "arrow_schema",
    "attach_ground_truth", "default_log_dir", "feature_column", "files_in_window", "inference_log_stats",
    "model_dir_name", "model_root", "to_utc",
    "read_ground_truth", "read_inference_log", "recover_journals",
]


def files_in_window(root: Path, start: dt.datetime | None, end: dt.datetime | None) -> list[Path]:
    """Return the Parquet files of the hour partitions under ``root`` that overlap ``[start, end)``, in time order."""
    if not root.is_dir():
        return []
    files: list[Path] = []
    for day_dir in sorted(root.glob("date=*")):
        match = DATE_DIR.fullmatch(day_dir.name)
        if not match:
            continue
        day = dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=dt.UTC)
        for hour_dir in sorted(day_dir.glob("hour=*")):
            hour_match = HOUR_DIR.fullmatch(hour_dir.name)
            if not hour_match:
                continue
            hour_start = day + dt.timedelta(hours=int(hour_match.group(1)))
            if end is not None and hour_start >= end:
                continue
            if start is not None and hour_start + dt.timedelta(hours=1) <= start:
                continue
            files.extend(sorted(hour_dir.glob("part-*.parquet")))
    return files


def _read_tables(files: Iterable[Path]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f) for f in files]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def read_inference_log(log_dir: str | Path | None, model_name: str, start: Any = None, end: Any = None,
                       with_labels: bool = False) -> pd.DataFrame:
    """Read the logged predictions of a model in a time window as a pandas frame.

    Args:
        log_dir: Root folder of the inference log (None: the embedded default under the state folder).
        model_name: Registered model name.
        start: Earliest arrival time (inclusive): datetime, date or ISO string; naive means UTC.
        end: Latest arrival time (exclusive).
        with_labels: Join the ground truth attached with :func:`attach_ground_truth` as ``label``
            (and ``label_timestamp``); predictions without a label get a missing value.

    Returns:
        One row per prediction, oldest first: ``request_id``, ``timestamp`` (UTC), ``model_name``,
        ``model_version``, ``source``, one column per input feature, ``prediction``, ``score``
        (and ``label``, ``label_timestamp``). Empty (with those base columns) when nothing was logged.

    Examples:
        >>> from tasks.inference_log import read_inference_log
        >>> frame = read_inference_log(None, "churn-classifier", start="2026-01-01T00:00:00")  # doctest: +SKIP
        >>> frame.groupby("model_version").size()  # doctest: +SKIP
    """
    import pandas as pd

    root = model_root(log_dir, model_name)
    start_at, end_at = to_utc(start), to_utc(end)
    table = _read_tables(files_in_window(root / PREDICTIONS_DIR, start_at, end_at))
    if table is None:
        columns = list(BASE_COLUMNS + OUTPUT_COLUMNS) + (list(LABEL_COLUMNS) if with_labels else [])
        frame = pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
        frame["timestamp"] = pd.Series(dtype="datetime64[us, UTC]")
        return frame
    frame = table.to_pandas()
    if start_at is not None:
        frame = frame[frame["timestamp"] >= pd.Timestamp(start_at)]
    if end_at is not None:
        frame = frame[frame["timestamp"] < pd.Timestamp(end_at)]
    features = [c for c in frame.columns if c not in RESERVED_COLUMNS]
    if "probabilities" not in frame.columns:  # files written before the column existed
        frame["probabilities"] = None
    frame = frame[list(BASE_COLUMNS) + features + list(OUTPUT_COLUMNS)]
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    if with_labels:
        labels = read_ground_truth(log_dir, model_name)
        frame = frame.merge(labels, on="request_id", how="left")
    return frame


def read_ground_truth(log_dir: str | Path | None, model_name: str) -> pd.DataFrame:
    """Read the ground truth attached to a model's predictions (the latest label per request id).

    Args:
        log_dir: Root folder of the inference log (None: the embedded default).
        model_name: Registered model name.

    Returns:
        Columns ``request_id``, ``label``, ``label_timestamp``.

    Examples:
        >>> read_ground_truth(None, "churn-classifier").head()  # doctest: +SKIP
    """
    import pandas as pd

    root = model_root(log_dir, model_name)
    table = _read_tables(files_in_window(root / LABELS_DIR, None, None))
    if table is None:
        return pd.DataFrame({"request_id": pd.Series(dtype="object"), "label": pd.Series(dtype="object"),
                             "label_timestamp": pd.Series(dtype="datetime64[us, UTC]")})
    labels = table.to_pandas().sort_values("label_timestamp", kind="stable")
    return labels.drop_duplicates("request_id", keep="last").reset_index(drop=True)


def attach_ground_truth(log_dir: str | Path | None, model_name: str,
                        labels: pd.DataFrame | Mapping[str, Any] | Iterable[tuple[str, Any]],
                        label_column: str = "label", at: Any = None) -> int:
    """Record the true outcome of earlier predictions, by request id (labels arrive later).

    Labels are appended to ``<model>/labels`` (partitioned by arrival time); a later label for
    the same request id replaces an earlier one when read. :func:`read_inference_log` with
    ``with_labels=True`` joins them.

    Args:
        log_dir: Root folder of the inference log (None: the embedded default).
        model_name: Registered model name.
        labels: A frame with ``request_id`` and ``label_column``, a mapping request id -> label, or
            ``(request_id, label)`` pairs.
        label_column: Label column of a frame.
        at: When the labels arrived (default: now, UTC).

    Returns:
        The number of labels recorded.

    Raises:
        ValueError: If a request id is empty or a label is missing.

    Examples:
        >>> attach_ground_truth(None, "churn-classifier", {"5f0c...": 1, "9ab2...": 0})  # doctest: +SKIP
        2
    """
    import pandas as pd
    import pyarrow as pa

    if isinstance(labels, pd.DataFrame):
        missing = [c for c in ("request_id", label_column) if c not in labels.columns]
        if missing:
            raise ValueError(f"Cannot attach ground truth to {model_name!r}: the frame lacks column(s) {missing}.")
        pairs = labels[["request_id", label_column]].rename(columns={label_column: "label"})
    else:
        items = list(labels.items()) if isinstance(labels, Mapping) else list(labels)
        pairs = pd.DataFrame(items, columns=["request_id", "label"])
    if pairs.empty:
        return 0
    if pairs["request_id"].isna().any() or (pairs["request_id"].astype(str).str.len() == 0).any():
        raise ValueError(f"Cannot attach ground truth to {model_name!r}: every label needs a request id.")
    if pairs["label"].isna().any():
        bad = pairs.loc[pairs["label"].isna(), "request_id"].head(5).tolist()
        raise ValueError(f"Cannot attach ground truth to {model_name!r}: missing label for request(s) {bad}.")
    arrived = to_utc(at) or dt.datetime.now(dt.UTC)
    pairs = pairs.assign(request_id=pairs["request_id"].astype(str),
                         label_timestamp=pd.Timestamp(arrived).as_unit("us"))
    table = pa.Table.from_pandas(pairs.reset_index(drop=True), preserve_index=False)
    root = model_root(log_dir, model_name)
    hour_start = arrived.replace(minute=0, second=0, microsecond=0)
    name = f"part-{arrived:%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
    write_parquet_atomic(table, partition_path(root / LABELS_DIR, hour_start), name)
    return len(pairs)


def inference_log_stats(log_dir: str | Path | None, model_name: str) -> dict[str, Any]:
    """Return the written / dropped counters of every writer of a model, and their totals.

    Args:
        log_dir: Root folder of the inference log (None: the embedded default).
        model_name: Registered model name.

    Returns:
        ``{"written": int, "dropped": int, "rejected": int, "writers": [per-writer stats, newest first]}``.

    Examples:
        >>> inference_log_stats(None, "churn-classifier")["dropped"]  # doctest: +SKIP
        0
    """
    root = model_root(log_dir, model_name) / STATS_DIR
    writers: list[dict[str, Any]] = []
    for path in root.glob("*.json") if root.is_dir() else []:
        try:
            writers.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    writers.sort(key=lambda w: str(w.get("updated_at", "")), reverse=True)
    return {"written": sum(int(w.get("written") or 0) for w in writers),
            "dropped": sum(int(w.get("dropped") or 0) for w in writers),
            "rejected": sum(int(w.get("rejected") or 0) for w in writers), "writers": writers}
