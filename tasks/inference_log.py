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

Two ways to write:

* journal (the serving process): :meth:`InferenceLogWriter.append` writes each record to an
  append-only journal file (``<model>/_journal/<writer>/seg-<n>.jsonl``, one JSON line per record,
  one ``write()`` per batch) before the response is sent, so an acknowledged prediction survives
  the death of the process (SIGKILL included; no fsync is needed for that). The writer thread
  rotates the segment and compacts closed segments into Parquet; a segment is removed only after
  its Parquet files are in place, and their names derive from the segment, so compacting a segment
  twice overwrites instead of duplicating. The journals of dead writers (their ``flock`` is free)
  are compacted by the next writer of the model that starts, or by :func:`recover_journals`.
* in memory (batch scoring, and the service with the journal switched off): records wait in
  memory and are written by the thread; records beyond ``max_buffered`` are dropped and counted.

One record never takes another with it: a batch that cannot be stored as a whole is stored record
by record, and a record that cannot be stored at all is kept as JSON in ``<model>/_rejected/`` and
counted (``rejected``), never silently dropped. Files appear atomically (written under a dot-name,
then renamed), so a reader never sees half a file.

This module imports no Prefect and nothing of ours: the bento carries a copy of it
(``mlops_inference_log.py``) so that the serving process stays light.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

try:  # small C extension on the request path (installed with prefect); plain fallback otherwise
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    def _dumps(value: Any) -> bytes:
        return json.dumps(value, default=str, ensure_ascii=False).encode()

    _loads = json.loads

logger = logging.getLogger("mlops.inference_log")

#: Columns every prediction row has, in this order; features go between ``source`` and ``prediction``.
BASE_COLUMNS = ("request_id", "timestamp", "model_name", "model_version", "source")
OUTPUT_COLUMNS = ("prediction", "score", "probabilities")
LABEL_COLUMNS = ("label", "label_timestamp")
RESERVED_COLUMNS = frozenset(BASE_COLUMNS + OUTPUT_COLUMNS + LABEL_COLUMNS)
PREDICTIONS_DIR = "predictions"
LABELS_DIR = "labels"
STATS_DIR = "_stats"
JOURNAL_DIR = "_journal"
REJECTED_DIR = "_rejected"


class JournalError(OSError):
    """A record could not reach the journal: the prediction must not be acknowledged."""


class RecordError(ValueError):
    """A record cannot be written to the journal (a value JSON cannot hold): refuse the request."""

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
    __slots__ = ("frame", "ids", "timestamps", "predictions", "scores", "probabilities")

    def __init__(self, frame: Any, ids: Sequence[str], timestamps: Sequence[float], predictions: Any,
                 scores: Any, probabilities: Sequence[Any] | None = None) -> None:
        self.frame = frame
        self.ids = ids
        self.timestamps = timestamps
        self.predictions = predictions
        self.scores = scores
        self.probabilities = probabilities


def _plain(values: Any, n: int) -> list[Any]:
    if values is None:
        return [None] * n
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _journal_rows(ids: Sequence[str], timestamps: Sequence[float], features: Any, predictions: Any, scores: Any,
                  probabilities: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Return records in the journal's form: ``{"i": id, "t": arrival, "f": inputs, "p": prediction, "s", "q"}``."""
    n = len(ids)
    inputs = features if isinstance(features, list) else features.to_dict("records")
    return [{"i": str(i), "t": float(t), "f": f, "p": p, "s": s, "q": q} for i, t, f, p, s, q in zip(
        ids, timestamps, inputs, _plain(predictions, n), _plain(scores, n), _plain(probabilities, n), strict=True)]


def _rows_table(rows: list[dict[str, Any]], meta: Mapping[str, Any], schema: Any) -> tuple[Any, list[int]]:
    """One Arrow table of journal rows (raises on a value the schema cannot hold)."""
    import pyarrow as pa

    inputs = [r["f"] for r in rows]
    if schema is not None:
        stamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
        if stamps:
            inputs = [{**f, **{c: _to_utc(f[c]) for c in stamps if isinstance(f.get(c), str)}} for f in inputs]
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
    columns["probabilities"] = pa.array([None if r["q"] is None else _dumps(r["q"]).decode() for r in rows],
                                        pa.string())
    return pa.table(columns), micros


def _write_hours(root: Path, name: str, table: Any, micros: Sequence[int]) -> int:
    """Write a table as one file per (day, hour) partition named ``part-<name>-<YYYYmmddHH>.parquet``."""
    import pyarrow as pa

    hours = [m // 3_600_000_000 for m in micros]
    unique = sorted(set(hours))
    for hour in unique:
        part = table if len(unique) == 1 else table.filter(pa.array([h == hour for h in hours]))
        start = dt.datetime.fromtimestamp(int(hour) * 3600, tz=dt.UTC)
        _write_atomic(part, _partition_path(root / PREDICTIONS_DIR, start), f"part-{name}-{start:%Y%m%d%H}.parquet")
    return table.num_rows


def _store_rows(root: Path, name: str, rows: list[dict[str, Any]], meta: Mapping[str, Any],
                schema: Any) -> tuple[int, int]:
    """Write rows to the Parquet log; a batch that cannot be stored whole is stored record by record.

    A record that cannot be stored even alone is kept as JSON in ``_rejected/`` (with the reason).
    Names derive from ``name``: storing the same rows again overwrites the same files.

    Returns:
        ``(written, rejected)``.
    """
    try:
        table, micros = _rows_table(rows, meta, schema)
    except Exception:  # noqa: BLE001 - one bad value: isolate it below
        table = None
    if table is not None:
        return _write_hours(root, name, table, micros), 0
    written = rejected = 0
    for k, row in enumerate(rows):
        try:
            table, micros = _rows_table([row], meta, schema)
        except Exception as exc:  # noqa: BLE001 - kept aside with its reason, never dropped
            _write_json_atomic(root / REJECTED_DIR / f"{name}-r{k:05d}.json",
                               {"reason": f"{type(exc).__name__}: {exc}", "record": row, "meta": dict(meta)})
            rejected += 1
            continue
        written += _write_hours(root, f"{name}-r{k:05d}", table, micros)
    if rejected:
        logger.warning("Inference log: %d record(s) of %s could not be stored as Parquet; kept in %s", rejected,
                       name, root / REJECTED_DIR)
    return written, rejected


def _compact_segment(root: Path, writer_id: str, segment: Path, meta: Mapping[str, Any],
                     schema: Any) -> tuple[int, int]:
    """Store a closed journal segment in the Parquet log, then remove it (idempotent)."""
    rows = []
    for line in segment.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            row = _loads(line)
        except ValueError:
            continue  # a torn line: its write() never returned, so it was never acknowledged
        if isinstance(row, dict) and "i" in row and "t" in row:
            rows.append(row)
    counts = _store_rows(root, f"{writer_id}-{segment.stem}", rows, meta, schema) if rows else (0, 0)
    segment.unlink()
    return counts


def _bump_stats(root: Path, meta: Mapping[str, Any], written: int, rejected: int) -> None:
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
    _write_json_atomic(path, stats)


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
    root = (Path(log_dir) if log_dir is not None else default_log_dir()) / model_dir_name(model_name)
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
                w, r = _compact_segment(root, meta["writer_id"], segment, meta, schema)
                written, rejected = written + w, rejected + r
            _bump_stats(root, meta, written, rejected)
            shutil.rmtree(folder, ignore_errors=True)
            totals["writers"] += 1
            totals["written"] += written
            totals["rejected"] += rejected
        finally:
            os.close(fd)
    return totals


class InferenceLogWriter:
    """Writes prediction records to the Parquet log: through a journal, or buffered in memory.

    With ``journal=True`` (the serving process), :meth:`append` writes records to this writer's
    append-only journal before the caller answers, and a daemon thread rotates the journal every
    ``flush_interval_s`` seconds (or as soon as ``flush_records`` records wait) and compacts the
    closed segments into Parquet (one file per segment and hour). When it starts, the thread also
    recovers the journals of this model's dead writers. ``close`` compacts what is left.

    Without a journal, ``log`` only appends a reference to the batch (a few microseconds) and the
    thread writes it; records beyond ``max_buffered`` waiting records, and records of a failed
    write, are dropped and counted, never raised. Either way a batch that cannot be stored whole
    is stored record by record (see :func:`_store_rows`).

    Args:
        log_dir: Root folder of the inference log.
        model_name: Registered model name.
        model_version: Registered model version.
        source: ``online`` for the service, ``batch`` for batch scoring.
        flush_interval_s: Longest time a record waits before it is written to Parquet.
        flush_records: Write as soon as this many records wait.
        max_buffered: Most records kept in memory (without a journal); more are dropped (and counted).
        writer_id: Name of this writer's stats file and journal; unique per process by default.
        start_thread: Start the background thread (False: call :meth:`flush` yourself).
        feature_types: Feature name -> MLflow column type (``double``, ``long``, ``string`` ...), so
            that every file of a model version has the same column types.
        passthrough_types: Columns logged but not given to the model (name -> type, e.g. ``datetime``).
        journal: Write every record to an append-only journal first (survives SIGKILL).

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
                 feature_types: Mapping[str, str] | None = None, passthrough_types: Mapping[str, str] | None = None,
                 journal: bool = False) -> None:
        self.log_dir = Path(log_dir)
        self.root = self.log_dir / model_dir_name(model_name)
        self.feature_types = dict(feature_types or {})
        self.passthrough_types = dict(passthrough_types or {})
        self.schema = arrow_schema(self.feature_types, self.passthrough_types) if feature_types else None
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
        self.rejected = 0
        self.journaled = 0
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
        self.journal = bool(journal)
        self._jfd: int | None = None
        self._lock_fd: int | None = None
        if self.journal:
            self._open_journal()
        if start_thread:
            self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
            self._thread.start()

    def _meta(self) -> dict[str, Any]:
        return {"writer_id": self.writer_id, "model_name": self.model_name, "model_version": self.model_version,
                "source": self.source, "feature_types": self.feature_types,
                "passthrough_types": self.passthrough_types, "pid": os.getpid()}

    # -- journal ----------------------------------------------------------------------------------
    def _open_journal(self) -> None:
        self.journal_dir = self.root / JOURNAL_DIR / self.writer_id
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.journal_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # held until this process ends: marks the journal as live
        _write_json_atomic(self.journal_dir / "meta.json", self._meta())
        self._jseq = 0
        self._jrecords = 0
        self._jfd = self._open_segment()

    def _segment(self, seq: int) -> Path:
        return self.journal_dir / f"seg-{seq:06d}.jsonl"

    def _open_segment(self) -> int:
        return os.open(self._segment(self._jseq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _rotate_locked(self) -> None:
        """Start a new segment (caller holds ``_lock``); a failed write never leaves a torn line in use."""
        if self._jfd is not None:
            try:
                os.close(self._jfd)
            except OSError:
                pass
        self._jfd = None
        self._jseq += 1
        self._jrecords = 0
        try:
            self._jfd = self._open_segment()
        except OSError as exc:
            self.last_error = f"journal: {exc}"

    def encode(self, request_ids: Sequence[str], timestamps: Sequence[float], records: list[dict[str, Any]] | Any,
               predictions: Any, scores: Any = None, probabilities: Sequence[Any] | None = None) -> bytes:
        """Return the journal lines of a batch of predictions.

        Raises:
            RecordError: If a value cannot be written as JSON (e.g. a string with a lone surrogate).
        """
        try:
            rows = _journal_rows(request_ids, timestamps, records, predictions, scores, probabilities)
            return b"".join([_dumps(row) + b"\n" for row in rows])
        except (TypeError, ValueError) as exc:
            raise RecordError(f"the record cannot be logged: {exc}") from exc

    def append(self, data: bytes, count: int) -> None:
        """Write encoded records to the journal (one ``write()``); they survive this process's death.

        Raises:
            JournalError: If the journal cannot be written (the caller must not acknowledge them).
        """
        with self._lock:
            try:
                if self._jfd is None:
                    self._jfd = self._open_segment()
                view = memoryview(data)
                while view:
                    view = view[os.write(self._jfd, view):]
            except OSError as exc:
                self.last_error = f"journal: {type(exc).__name__}: {exc}"
                self._rotate_locked()
                raise JournalError(f"the inference log journal under {self.journal_dir} cannot be written: {exc}. "
                                   "Free space or fix the folder's permissions.") from exc
            self._jrecords += count
            self.journaled += count
            full = self._jrecords >= self.flush_records
        if full:
            self._wake.set()

    def _flush_journal(self) -> int:
        with self._lock:
            if self._jrecords:
                self._rotate_locked()
            current = self._jseq
        total = 0
        meta = self._meta()
        for segment in sorted(self.journal_dir.glob("seg-*.jsonl")):
            if int(segment.stem[4:]) >= current:
                continue
            try:
                written, rejected = _compact_segment(self.root, self.writer_id, segment, meta, self.schema)
            except Exception as exc:  # noqa: BLE001 - the segment stays; compacted on the next pass or by recovery
                self.last_error = f"compaction: {type(exc).__name__}: {exc}"
                logger.warning("Inference log: cannot compact %s yet: %s", segment, self.last_error)
                break
            self.written += written
            self.rejected += rejected
            total += written
        self._write_stats()
        return total

    # -- in memory ------------------------------------------------------------------------------
    def log(self, request_ids: Sequence[str], timestamps: Sequence[float],
            features: pd.DataFrame | list[dict[str, Any]], predictions: Sequence[Any],
            scores: Sequence[float] | None = None, probabilities: Sequence[Any] | None = None) -> None:
        """Log one batch of predictions (in memory: never raises; with a journal: written before it returns).

        Args:
            request_ids: One id per record.
            timestamps: One arrival time per record (seconds since the epoch, UTC).
            features: The input records: a frame with one column per feature, or a list of
                record dicts (cheapest: converted in one pass when written). Not modified afterwards.
            predictions: One prediction per record.
            scores: One score per record, or None.
            probabilities: One ``{label: probability}`` per record, or None.

        Raises:
            JournalError: With a journal, if it cannot be written.
            RecordError: With a journal, if a record cannot be written as JSON.
        """
        n = len(request_ids)
        if self.journal:
            self.append(self.encode(request_ids, timestamps, features, predictions, scores, probabilities), n)
            return
        try:
            with self._lock:
                if self._buffered + n > self.max_buffered:
                    self.dropped += n
                    return
                self._batches.append(_Batch(features, request_ids, timestamps, predictions, scores, probabilities))
                self._buffered += n
                full = self._buffered >= self.flush_records
            if full:
                self._wake.set()
        except Exception as exc:  # noqa: BLE001 - the request must never fail because of the log
            self.dropped += n
            self.last_error = repr(exc)

    # -- background -----------------------------------------------------------------------------
    def _run(self) -> None:
        if self.journal:
            try:
                recover_journals(self.log_dir, self.model_name)
            except Exception as exc:  # noqa: BLE001 - retried by the next writer that starts
                self.last_error = f"recovery: {type(exc).__name__}: {exc}"
                logger.warning("Inference log: recovering dead journals failed: %s", self.last_error)
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write every buffered (or journaled) record to Parquet now.

        Returns:
            The number of records written (0 when nothing waited or the write failed).
        """
        with self._flush_lock:
            if self.journal:
                return self._flush_journal()
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

    def _table(self, batches: list[_Batch]) -> tuple[Any, Any]:
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
        probas = list(itertools.chain.from_iterable(_plain(b.probabilities, len(b.ids)) for b in batches))
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
        columns["probabilities"] = pa.array([None if q is None else _dumps(q).decode() for q in probas], pa.string())
        return pa.table(columns), micros.tolist()

    def _write(self, batches: list[_Batch]) -> int:
        name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{self.writer_id}-{next(self._seq):06d}"
        try:
            table, micros = self._table(batches)
        except Exception:  # noqa: BLE001 - a value the log cannot hold: store the records one by one
            rows = list(itertools.chain.from_iterable(
                _journal_rows(b.ids, b.timestamps, b.frame, b.predictions, b.scores, b.probabilities)
                for b in batches))
            written, rejected = _store_rows(self.root, name, rows, self._meta(), self.schema)
            self.rejected += rejected
            return written
        self.files += 1
        return _write_hours(self.root, name, table, micros)

    def stats(self) -> dict[str, Any]:
        """Return this writer's counters: written, journaled, rejected, dropped, buffered, files, last error."""
        return {"writer_id": self.writer_id, "model_name": self.model_name, "model_version": self.model_version,
                "source": self.source, "pid": os.getpid(), "journal": self.journal, "written": self.written,
                "journaled": self.journaled, "rejected": self.rejected, "dropped": self.dropped,
                "buffered": self._buffered, "files": self.files, "last_error": self.last_error,
                "updated_at": dt.datetime.now(dt.UTC).isoformat()}

    def _write_stats(self) -> None:
        try:
            _write_json_atomic(self.root / STATS_DIR / f"{self.writer_id}.json", self.stats())
        except OSError as exc:
            self.last_error = f"stats: {exc}"

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the background thread, write what is left and (with a journal) remove the empty journal."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self.flush()
        if self.journal and self._lock_fd is not None:
            with self._lock:
                if self._jfd is not None:
                    os.close(self._jfd)
                    self._jfd = None
                if not self._jrecords:
                    self._segment(self._jseq).unlink(missing_ok=True)
                if not any(self.journal_dir.glob("seg-*.jsonl")):
                    shutil.rmtree(self.journal_dir, ignore_errors=True)
                os.close(self._lock_fd)  # what is left is recovered by the next writer
                self._lock_fd = None
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
        ``{"written": int, "dropped": int, "rejected": int, "writers": [per-writer stats, newest first]}``.

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
    return {"written": sum(int(w.get("written") or 0) for w in writers),
            "dropped": sum(int(w.get("dropped") or 0) for w in writers),
            "rejected": sum(int(w.get("rejected") or 0) for w in writers), "writers": writers}
