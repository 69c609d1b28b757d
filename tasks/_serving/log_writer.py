"""The inference log writer: prediction records to Parquet by day and hour, through a journal or in memory.

With a journal (the serving process) each record reaches the journal (:mod:`.journal`) before it is
answered; in memory (batch scoring, or the journal switched off) records beyond ``max_buffered`` are
dropped and counted. Imports nothing outside this package: the bento carries it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import json_dumps
from .journal import (
    JournalError,
    RecordError,
    arrow_schema,
    compact_segment,
    journal_rows,
    recover_journals,
    store_rows,
    write_hours,
)
from .log_layout import JOURNAL_DIR, STATS_DIR, model_dir_name, write_json_atomic
from .log_table import Batch, batches_table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger("mlops.inference_log")


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
    is stored record by record (see :func:`store_rows`).

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
        self._batches: list[Batch] = []
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
        write_json_atomic(self.journal_dir / "meta.json", self._meta())
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
            rows = journal_rows(request_ids, timestamps, records, predictions, scores, probabilities)
            return b"".join([json_dumps(row) + b"\n" for row in rows])
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
                written, rejected = compact_segment(self.root, self.writer_id, segment, meta, self.schema)
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
                self._batches.append(Batch(features, request_ids, timestamps, predictions, scores, probabilities))
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

    def _write(self, batches: list[Batch]) -> int:
        name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{self.writer_id}-{next(self._seq):06d}"
        try:
            table, micros = batches_table(batches, self.schema, self.model_name, self.model_version, self.source)
        except Exception:  # noqa: BLE001 - a value the log cannot hold: store the records one by one
            rows = list(itertools.chain.from_iterable(
                journal_rows(b.ids, b.timestamps, b.frame, b.predictions, b.scores, b.probabilities)
                for b in batches))
            written, rejected = store_rows(self.root, name, rows, self._meta(), self.schema)
            self.rejected += rejected
            return written
        self.files += 1
        return write_hours(self.root, name, table, micros)

    def stats(self) -> dict[str, Any]:
        """Return this writer's counters: written, journaled, rejected, dropped, buffered, files, last error."""
        return {"writer_id": self.writer_id, "model_name": self.model_name, "model_version": self.model_version,
                "source": self.source, "pid": os.getpid(), "journal": self.journal, "written": self.written,
                "journaled": self.journaled, "rejected": self.rejected, "dropped": self.dropped,
                "buffered": self._buffered, "files": self.files, "last_error": self.last_error,
                "updated_at": dt.datetime.now(dt.UTC).isoformat()}

    def _write_stats(self) -> None:
        try:
            write_json_atomic(self.root / STATS_DIR / f"{self.writer_id}.json", self.stats())
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
