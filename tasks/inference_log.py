"""The inference log: every prediction, written durably in batches to Parquet partitioned by day and hour.

Layout under the log folder (``state_dir()/inference-log`` for the embedded set-up)::

    <model>/predictions/date=YYYY-MM-DD/hour=HH/part-<UTC time>-<writer>-<seq>.parquet
    <model>/labels/date=YYYY-MM-DD/hour=HH/part-<UTC time>-<pid>-<seq>.parquet   (ground truth, by arrival)
    <model>/_stats/<writer>.json                                                  (written / dropped counters)

A prediction row holds ``request_id``, ``timestamp`` (UTC, when the request arrived), ``model_name``,
``model_version``, ``source`` (``online`` or ``batch``), one column per input feature under its
own name (a feature whose name clashes with one of these columns is stored as ``feature_<name>``),
``prediction`` and ``score`` (probability of the positive class for a binary classifier, of the
predicted class for a multi-class one, empty for a regressor).

The writer never raises into the request path: records that cannot be buffered or written are
counted as dropped and the count is visible in the stats files and the service's
``/inference-log/stats`` endpoint. Files appear atomically (written under a dot-name, then
renamed), so a reader never sees half a file.

This module imports no Prefect and nothing of ours: the bento carries a copy of it
(``mlops_inference_log.py``) so that the serving process stays light.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger("mlops.inference_log")

#: Columns every prediction row has, in this order; features go between ``source`` and ``prediction``.
BASE_COLUMNS = ("request_id", "timestamp", "model_name", "model_version", "source")
OUTPUT_COLUMNS = ("prediction", "score")
LABEL_COLUMNS = ("label", "label_timestamp")
RESERVED_COLUMNS = frozenset(BASE_COLUMNS + OUTPUT_COLUMNS + LABEL_COLUMNS)
PREDICTIONS_DIR = "predictions"
LABELS_DIR = "labels"
STATS_DIR = "_stats"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_HOUR = re.compile(r"hour=(\d{2})")


def model_dir_name(model_name: str) -> str:
    """Return the folder name of a model in the log (unsafe characters replaced by ``_``)."""
    return _SAFE.sub("_", model_name).strip("._") or "model"


def feature_column(name: str) -> str:
    """Return the log column that holds an input feature (``feature_<name>`` when it clashes)."""
    return f"feature_{name}" if name in RESERVED_COLUMNS else name


def default_log_dir() -> Path:
    """Return the embedded default log folder: ``$PREFECT_MLOPS_HOME/inference-log`` (or ``./.mlops``)."""
    root = os.environ.get("PREFECT_MLOPS_HOME") or str(Path.cwd() / ".mlops")
    return Path(root).expanduser().resolve() / "inference-log"


def _to_utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif not isinstance(value, dt.datetime):  # pandas Timestamp is a datetime; dates are not
        value = dt.datetime.combine(value, dt.time())
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


_ARROW_TYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32", "string": "string",
                "boolean": "bool", "binary": "string"}


def arrow_schema(feature_types: Mapping[str, str]) -> Any:
    """Return the Arrow schema of the feature columns for MLflow column types (``double``, ``long`` ...)."""
    import pyarrow as pa

    fields = []
    for name, kind in feature_types.items():
        arrow = pa.timestamp("us") if kind == "datetime" else pa.type_for_alias(_ARROW_TYPES.get(kind, "string"))
        fields.append(pa.field(name, arrow))
    return pa.schema(fields)


def _partition_path(root: Path, hour_start: dt.datetime) -> Path:
    return root / f"date={hour_start:%Y-%m-%d}" / f"hour={hour_start:%H}"


def _write_atomic(table: Any, folder: Path, name: str) -> Path:
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, final)
    return final


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, sort_keys=True, default=str))
    os.replace(tmp, path)


class _Batch:
    __slots__ = ("frame", "ids", "timestamps", "predictions", "scores")

    def __init__(self, frame: Any, ids: Sequence[str], timestamps: Sequence[float], predictions: Any,
                 scores: Any) -> None:
        self.frame = frame
        self.ids = ids
        self.timestamps = timestamps
        self.predictions = predictions
        self.scores = scores


class InferenceLogWriter:
    """Buffers prediction records in memory and writes them to Parquet from a background thread.

    ``log`` only appends a reference to the batch (a few microseconds); a daemon thread
    writes every ``flush_interval_s`` seconds or as soon as ``flush_records`` records wait,
    one file per (day, hour) partition. ``close`` writes what is left (the serving process
    calls it on shutdown). Records beyond ``max_buffered`` waiting records, and records of a
    failed write, are dropped and counted, never raised.

    Args:
        log_dir: Root folder of the inference log.
        model_name: Registered model name.
        model_version: Registered model version.
        source: ``online`` for the service, ``batch`` for batch scoring.
        flush_interval_s: Longest time a record waits in memory.
        flush_records: Write as soon as this many records wait.
        max_buffered: Most records kept in memory; more are dropped (and counted).
        writer_id: Name of this writer's stats file; unique per process by default.
        start_thread: Start the background thread (False: call :meth:`flush` yourself).
        feature_types: Feature name -> MLflow column type (``double``, ``long``, ``string`` ...), so
            that every file of a model version has the same column types.

    Examples:
        >>> import pandas as pd
        >>> writer = InferenceLogWriter("/tmp/ilog", "churn", "3", start_thread=False)
        >>> writer.log(["r1"], [1767225600.0], pd.DataFrame({"x": [1.0]}), [1], [0.8])
        >>> writer.flush()
        1
    """

    def __init__(self, log_dir: str | Path, model_name: str, model_version: str, source: str = "online",
                 flush_interval_s: float = 2.0, flush_records: int = 20_000, max_buffered: int = 200_000,
                 writer_id: str | None = None, start_thread: bool = True,
                 feature_types: Mapping[str, str] | None = None) -> None:
        self.root = Path(log_dir) / model_dir_name(model_name)
        self.schema = arrow_schema(feature_types) if feature_types else None
        self.model_name = model_name
        self.model_version = str(model_version)
        self.source = source
        self.flush_interval_s = float(flush_interval_s)
        self.flush_records = int(flush_records)
        self.max_buffered = int(max_buffered)
        self.writer_id = writer_id or f"{source}-v{model_dir_name(self.model_version)}-{os.getpid()}-" \
                                      f"{uuid.uuid4().hex[:6]}"
        self.written = 0
        self.dropped = 0
        self.files = 0
        self.last_error: str | None = None
        self._seq = itertools.count()
        self._batches: list[_Batch] = []
        self._buffered = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
            self._thread.start()

    # -- request path -------------------------------------------------------------------------
    def log(self, request_ids: Sequence[str], timestamps: Sequence[float],
            features: pd.DataFrame | list[dict[str, Any]], predictions: Sequence[Any],
            scores: Sequence[float] | None = None) -> None:
        """Buffer one batch of predictions (never raises).

        Args:
            request_ids: One id per record.
            timestamps: One arrival time per record (seconds since the epoch, UTC).
            features: The input records: a frame with one column per feature, or a list of
                record dicts (cheapest: converted in one pass when written). Not modified afterwards.
            predictions: One prediction per record.
            scores: One score per record, or None.
        """
        n = len(request_ids)
        try:
            with self._lock:
                if self._buffered + n > self.max_buffered:
                    self.dropped += n
                    return
                self._batches.append(_Batch(features, request_ids, timestamps, predictions, scores))
                self._buffered += n
                full = self._buffered >= self.flush_records
            if full:
                self._wake.set()
        except Exception as exc:  # noqa: BLE001 - the request must never fail because of the log
            self.dropped += n
            self.last_error = repr(exc)

    # -- background -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write every buffered record now.

        Returns:
            The number of records written (0 when nothing waited or the write failed).
        """
        with self._flush_lock:
            with self._lock:
                batches, self._batches = self._batches, []
                count, self._buffered = self._buffered, 0
            if not batches:
                return 0
            try:
                written = self._write(batches)
            except Exception as exc:  # noqa: BLE001 - counted and logged, never raised
                self.dropped += count
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("Inference log: dropped %d records of %s v%s: %s", count, self.model_name,
                               self.model_version, self.last_error)
                written = 0
            else:
                self.written += written
            self._write_stats()
            return written

    def _features(self, batches: list[_Batch]) -> Any:
        """One Arrow table of the batches' inputs: record lists in one pass, frames as they are."""
        import pyarrow as pa

        tables = []
        run: list[dict[str, Any]] = []
        for batch in batches:
            if isinstance(batch.frame, list):
                run.extend(batch.frame)
                continue
            if run:
                tables.append(pa.Table.from_pylist(run, schema=self.schema))
                run = []
            table = pa.Table.from_pandas(batch.frame, preserve_index=False)
            if self.schema is not None:
                table = table.select([n for n in self.schema.names if n in table.column_names])
                table = table.cast(pa.schema([self.schema.field(n) for n in table.column_names]), safe=False)
            tables.append(table)
        if run:
            tables.append(pa.Table.from_pylist(run, schema=self.schema))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")

    def _write(self, batches: list[_Batch]) -> int:
        import numpy as np
        import pyarrow as pa

        features = self._features(batches)
        n = features.num_rows
        ids = list(itertools.chain.from_iterable(b.ids for b in batches))
        seconds = np.fromiter(itertools.chain.from_iterable(b.timestamps for b in batches), dtype="float64", count=n)
        preds = np.concatenate([np.asarray(b.predictions).reshape(-1) for b in batches])
        if all(b.scores is None for b in batches):
            scores = np.full(n, np.nan)
        else:
            scores = np.concatenate([np.full(len(b.ids), np.nan) if b.scores is None
                                     else np.asarray(b.scores, dtype="float64").reshape(-1) for b in batches])
        micros = (seconds * 1e6).astype("int64")
        columns: dict[str, Any] = {
            "request_id": pa.array(ids, pa.string()),
            "timestamp": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "model_name": pa.array([self.model_name] * n, pa.string()),
            "model_version": pa.array([self.model_version] * n, pa.string()),
            "source": pa.array([self.source] * n, pa.string()),
        }
        for name, col in zip(features.column_names, features.columns, strict=True):
            columns[feature_column(name)] = col
        columns["prediction"] = pa.array(preds.tolist() if preds.dtype == object else preds)
        columns["score"] = pa.array(scores, pa.float64())
        table = pa.table(columns)

        hours = micros // 3_600_000_000
        now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        written = 0
        for hour in np.unique(hours):
            part = table if len(np.unique(hours)) == 1 else table.filter(pa.array(hours == hour))
            start = dt.datetime.fromtimestamp(int(hour) * 3600, tz=dt.UTC)
            name = f"part-{now}-{self.writer_id}-{next(self._seq):06d}.parquet"
            _write_atomic(part, _partition_path(self.root / PREDICTIONS_DIR, start), name)
            self.files += 1
            written += part.num_rows
        return written

    def stats(self) -> dict[str, Any]:
        """Return this writer's counters: written, dropped, buffered, files, last error."""
        return {"writer_id": self.writer_id, "model_name": self.model_name, "model_version": self.model_version,
                "source": self.source, "pid": os.getpid(), "written": self.written, "dropped": self.dropped,
                "buffered": self._buffered, "files": self.files, "last_error": self.last_error,
                "updated_at": dt.datetime.now(dt.UTC).isoformat()}

    def _write_stats(self) -> None:
        try:
            _write_json_atomic(self.root / STATS_DIR / f"{self.writer_id}.json", self.stats())
        except OSError as exc:
            self.last_error = f"stats: {exc}"

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the background thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self.flush()
        self._write_stats()


# -- readers ----------------------------------------------------------------------------------------
def _files_in_window(root: Path, start: dt.datetime | None, end: dt.datetime | None) -> list[Path]:
    if not root.is_dir():
        return []
    files: list[Path] = []
    for day_dir in sorted(root.glob("date=*")):
        match = _PARTITION.fullmatch(day_dir.name)
        if not match:
            continue
        day = dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=dt.UTC)
        for hour_dir in sorted(day_dir.glob("hour=*")):
            hour_match = _HOUR.fullmatch(hour_dir.name)
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

    root = (Path(log_dir) if log_dir is not None else default_log_dir()) / model_dir_name(model_name)
    start_at, end_at = _to_utc(start), _to_utc(end)
    table = _read_tables(_files_in_window(root / PREDICTIONS_DIR, start_at, end_at))
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

    root = (Path(log_dir) if log_dir is not None else default_log_dir()) / model_dir_name(model_name)
    table = _read_tables(_files_in_window(root / LABELS_DIR, None, None))
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
    arrived = _to_utc(at) or dt.datetime.now(dt.UTC)
    pairs = pairs.assign(request_id=pairs["request_id"].astype(str),
                         label_timestamp=pd.Timestamp(arrived).as_unit("us"))
    table = pa.Table.from_pandas(pairs.reset_index(drop=True), preserve_index=False)
    root = (Path(log_dir) if log_dir is not None else default_log_dir()) / model_dir_name(model_name)
    hour_start = arrived.replace(minute=0, second=0, microsecond=0)
    name = f"part-{arrived:%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
    _write_atomic(table, _partition_path(root / LABELS_DIR, hour_start), name)
    return len(pairs)


def inference_log_stats(log_dir: str | Path | None, model_name: str) -> dict[str, Any]:
    """Return the written / dropped counters of every writer of a model, and their totals.

    Args:
        log_dir: Root folder of the inference log (None: the embedded default).
        model_name: Registered model name.

    Returns:
        ``{"written": int, "dropped": int, "writers": [per-writer stats, newest first]}``.

    Examples:
        >>> inference_log_stats(None, "churn-classifier")["dropped"]  # doctest: +SKIP
        0
    """
    root = (Path(log_dir) if log_dir is not None else default_log_dir()) / model_dir_name(model_name) / STATS_DIR
    writers: list[dict[str, Any]] = []
    for path in root.glob("*.json") if root.is_dir() else []:
        try:
            writers.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    writers.sort(key=lambda w: str(w.get("updated_at", "")), reverse=True)
    return {"written": sum(int(w.get("written", 0)) for w in writers),
            "dropped": sum(int(w.get("dropped", 0)) for w in writers), "writers": writers}


def epoch_seconds() -> float:
    """Return the current time in seconds since the epoch (the timestamp the writer expects)."""
    return time.time()
