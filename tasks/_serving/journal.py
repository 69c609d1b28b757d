"""The inference log's journal: records as JSON lines before they are answered, compacted into Parquet.

A writer (:class:`~.log_writer.InferenceLogWriter` with ``journal=True``) writes each record to an
append-only journal file (``<model>/_journal/<writer>/seg-<n>.jsonl``, one JSON line per record,
one ``write()`` per batch) before the response is sent, so an acknowledged prediction survives the
death of the process (SIGKILL included; no fsync is needed for that). Closed segments are compacted
into Parquet; a segment is removed only after its Parquet files are in place, and their names
derive from the segment, so compacting a segment twice overwrites instead of duplicating. The
journals of dead writers (their ``flock`` is free) are compacted by the next writer of the model
that starts, or by :func:`recover_journals`.

One record never takes another with it: a batch that cannot be stored as a whole is stored record
by record, and a record that cannot be stored at all is kept as JSON in ``<model>/_rejected/`` and
counted (``rejected``), never silently dropped.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .common import json_dumps, json_loads
from .log_layout import (
    JOURNAL_DIR,
    PREDICTIONS_DIR,
    REJECTED_DIR,
    STATS_DIR,
    feature_column,
    model_root,
    partition_path,
    to_utc,
    write_json_atomic,
    write_parquet_atomic,
)

logger = logging.getLogger("mlops.inference_log")

class JournalError(OSError):
    """A record could not reach the journal: the prediction must not be acknowledged."""


class RecordError(ValueError):
    """A record cannot be written to the journal (a value JSON cannot hold): refuse the request."""


_ARROW_TYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32", "string": "string",
                "boolean": "bool", "binary": "string"}


def arrow_schema(feature_types: Mapping[str, str], passthrough_types: Mapping[str, str] | None = None) -> Any:
    """Return the Arrow schema of the feature columns for MLflow column types (``double``, ``long`` ...).

    Passthrough columns (logged, never given to the model) of type ``datetime`` are UTC timestamps.
    """
    import pyarrow as pa

    fields = []
    for name, kind in feature_types.items():
        arrow = pa.timestamp("us") if kind == "datetime" else pa.type_for_alias(_ARROW_TYPES.get(kind, "string"))
        fields.append(pa.field(name, arrow))
    for name, kind in (passthrough_types or {}).items():
        if name in feature_types:
            continue
        arrow = pa.timestamp("us", tz="UTC") if kind == "datetime" else pa.type_for_alias(
            _ARROW_TYPES.get(kind, "string"))
        fields.append(pa.field(name, arrow))
    return pa.schema(fields)


def plain_values(values: Any, n: int) -> list[Any]:
    """Return values as a list (None: n Nones)."""
    if values is None:
        return [None] * n
    return values.tolist() if hasattr(values, "tolist") else list(values)


def journal_rows(ids: Sequence[str], timestamps: Sequence[float], features: Any, predictions: Any, scores: Any,
                  probabilities: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Return records in the journal's form: ``{"i": id, "t": arrival, "f": inputs, "p": prediction, "s", "q"}``."""
    n = len(ids)
    inputs = features if isinstance(features, list) else features.to_dict("records")
    outputs = zip(plain_values(predictions, n), plain_values(scores, n), plain_values(probabilities, n), strict=True)
    return [{"i": str(i), "t": float(t), "f": f, "p": p, "s": s, "q": q}
            for i, t, f, (p, s, q) in zip(ids, timestamps, inputs, outputs, strict=True)]


def rows_table(rows: list[dict[str, Any]], meta: Mapping[str, Any], schema: Any) -> tuple[Any, list[int]]:
    """One Arrow table of journal rows (raises on a value the schema cannot hold)."""
    import pyarrow as pa

    inputs = [r["f"] for r in rows]
    if schema is not None:
        stamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
        if stamps:
            inputs = [{**f, **{c: to_utc(f[c]) for c in stamps if isinstance(f.get(c), str)}} for f in inputs]
    features = pa.Table.from_pylist(inputs, schema=schema)
    n = len(rows)
    micros = [int(r["t"] * 1e6) for r in rows]
    columns: dict[str, Any] = {
        "request_id": pa.array([r["i"] for r in rows], pa.string()),
        "timestamp": pa.array(micros, pa.timestamp("us", tz="UTC")),
        "model_name": pa.array([meta["model_name"]] * n, pa.string()),
        "model_version": pa.array([str(meta["model_version"])] * n, pa.string()),
        "source": pa.array([meta["source"]] * n, pa.string()),
    }
    for name, col in zip(features.column_names, features.columns, strict=True):
        columns[feature_column(name)] = col
    columns["prediction"] = pa.array([r["p"] for r in rows])
    columns["score"] = pa.array([r["s"] for r in rows], pa.float64())
    columns["probabilities"] = pa.array([None if r["q"] is None else json_dumps(r["q"]).decode() for r in rows],
                                        pa.string())
    return pa.table(columns), micros


def write_hours(root: Path, name: str, table: Any, micros: Sequence[int]) -> int:
    """Write a table as one file per (day, hour) partition named ``part-<name>-<YYYYmmddHH>.parquet``."""
    import pyarrow as pa

    hours = [m // 3_600_000_000 for m in micros]
    unique = sorted(set(hours))
    for hour in unique:
        part = table if len(unique) == 1 else table.filter(pa.array([h == hour for h in hours]))
        start = dt.datetime.fromtimestamp(int(hour) * 3600, tz=dt.UTC)
        folder = partition_path(root / PREDICTIONS_DIR, start)
        write_parquet_atomic(part, folder, f"part-{name}-{start:%Y%m%d%H}.parquet")
    return table.num_rows


def store_rows(root: Path, name: str, rows: list[dict[str, Any]], meta: Mapping[str, Any],
                schema: Any) -> tuple[int, int]:
    """Write rows to the Parquet log; a batch that cannot be stored whole is stored record by record.

    A record that cannot be stored even alone is kept as JSON in ``_rejected/`` (with the reason).
    Names derive from ``name``: storing the same rows again overwrites the same files.

    Returns:
        ``(written, rejected)``.
    """
    try:
        table, micros = rows_table(rows, meta, schema)
    except Exception:  # noqa: BLE001 - one bad value: isolate it below
        table = None
    if table is not None:
        return write_hours(root, name, table, micros), 0
    written = rejected = 0
    for k, row in enumerate(rows):
        try:
            table, micros = rows_table([row], meta, schema)
        except Exception as exc:  # noqa: BLE001 - kept aside with its reason, never dropped
            write_json_atomic(root / REJECTED_DIR / f"{name}-r{k:05d}.json",
                               {"reason": f"{type(exc).__name__}: {exc}", "record": row, "meta": dict(meta)})
            rejected += 1
            continue
        written += write_hours(root, f"{name}-r{k:05d}", table, micros)
    if rejected:
        logger.warning("Inference log: %d record(s) of %s could not be stored as Parquet; kept in %s", rejected,
                       name, root / REJECTED_DIR)
    return written, rejected


def compact_segment(root: Path, writer_id: str, segment: Path, meta: Mapping[str, Any],
                     schema: Any) -> tuple[int, int]:
    """Store a closed journal segment in the Parquet log, then remove it (idempotent)."""
    rows = []
    for line in segment.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            row = json_loads(line)
        except ValueError:
            continue  # a torn line: its write() never returned, so it was never acknowledged
        if isinstance(row, dict) and "i" in row and "t" in row:
            rows.append(row)
    counts = store_rows(root, f"{writer_id}-{segment.stem}", rows, meta, schema) if rows else (0, 0)
    segment.unlink()
    return counts


def bump_stats(root: Path, meta: Mapping[str, Any], written: int, rejected: int) -> None:
    path = root / STATS_DIR / f"{meta['writer_id']}.json"
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        stats = {k: meta.get(k) for k in ("writer_id", "model_name", "model_version", "source")}
    stats["written"] = int(stats.get("written") or 0) + written
    stats["rejected"] = int(stats.get("rejected") or 0) + rejected
    stats["recovered"] = int(stats.get("recovered") or 0) + written + rejected
    stats["buffered"] = 0
    stats["updated_at"] = dt.datetime.now(dt.UTC).isoformat()
    write_json_atomic(path, stats)


def recover_journals(log_dir: str | Path | None, model_name: str) -> dict[str, int]:
    """Compact the journals that dead writers of a model left behind into the Parquet log.

    A writer holds an exclusive ``flock`` on its journal folder for its whole life; the kernel
    releases it when the process dies (SIGKILL included), so a folder whose lock can be taken
    belongs to a dead writer. Safe to run concurrently and repeatedly (compaction is idempotent).

    Args:
        log_dir: Root folder of the inference log (None: the embedded default).
        model_name: Registered model name.

    Returns:
        ``{"writers": journals recovered, "written": records stored, "rejected": records kept aside}``.

    Examples:
        >>> recover_journals(None, "churn-classifier")  # doctest: +SKIP
        {'writers': 1, 'written': 565, 'rejected': 0}
    """
    root = model_root(log_dir, model_name)
    totals = {"writers": 0, "written": 0, "rejected": 0}
    journals = root / JOURNAL_DIR
    for folder in sorted(journals.iterdir()) if journals.is_dir() else []:
        if not (folder / "meta.json").is_file():
            continue  # a writer still starting (it writes meta.json once it holds its lock)
        try:
            fd = os.open(folder / ".lock", os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            if not folder.is_dir():
                continue  # another process recovered it meanwhile
            meta = json.loads((folder / "meta.json").read_text())
            schema = arrow_schema(meta["feature_types"], meta.get("passthrough_types")) \
                if meta.get("feature_types") else None
            written = rejected = 0
            for segment in sorted(folder.glob("seg-*.jsonl")):
                w, r = compact_segment(root, meta["writer_id"], segment, meta, schema)
                written, rejected = written + w, rejected + r
            bump_stats(root, meta, written, rejected)
            shutil.rmtree(folder, ignore_errors=True)
            totals["writers"] += 1
            totals["written"] += written
            totals["rejected"] += rejected
        finally:
            os.close(fd)
    return totals
