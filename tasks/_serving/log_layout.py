"""The inference log's layout, shared by its writer (in the serving process) and its readers (monitoring).

Layout under the log folder (``$PREFECT_MLOPS_HOME/inference-log`` for the embedded set-up)::

    <model>/predictions/date=YYYY-MM-DD/hour=HH/part-<UTC time>-<writer>-<seq>.parquet
    <model>/labels/date=YYYY-MM-DD/hour=HH/part-<UTC time>-<pid>-<seq>.parquet   (ground truth, by arrival)
    <model>/_stats/<writer>.json                                                  (written / dropped counters)
    <model>/_journal/<writer>/seg-<n>.jsonl                                       (the writer's journal)
    <model>/_rejected/<name>.json                                                 (records Parquet cannot hold)

A prediction row holds ``request_id``, ``timestamp`` (UTC, when the request arrived), ``model_name``,
``model_version``, ``source`` (``online`` or ``batch``), one column per input feature under its
own name (a feature whose name clashes with one of these columns is stored as ``feature_<name>``),
``prediction``, ``score`` (probability of the positive class for a binary classifier, of the
predicted class for a multi-class one, empty for a regressor) and ``probabilities`` (JSON text).

Files appear atomically (written under a dot-name, then renamed), so a reader never sees half a file.
Imports the standard library only (pyarrow lazily).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

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

UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
HOUR_DIR = re.compile(r"hour=(\d{2})")


def model_dir_name(model_name: str) -> str:
    """Return the folder name of a model in the log (unsafe characters replaced by ``_``)."""
    return UNSAFE_CHARS.sub("_", model_name).strip("._") or "model"


def feature_column(name: str) -> str:
    """Return the log column that holds an input feature (``feature_<name>`` when it clashes)."""
    return f"feature_{name}" if name in RESERVED_COLUMNS else name


def default_log_dir() -> Path:
    """Return the embedded default log folder: ``$PREFECT_MLOPS_HOME/inference-log`` (or ``./.mlops``)."""
    root = os.environ.get("PREFECT_MLOPS_HOME") or str(Path.cwd() / ".mlops")
    return Path(root).expanduser().resolve() / "inference-log"


def model_root(log_dir: str | Path | None, model_name: str) -> Path:
    """Return a model's folder in the log (``log_dir`` None: the embedded default)."""
    return (Path(log_dir) if log_dir is not None else default_log_dir()) / model_dir_name(model_name)


def to_utc(value: Any) -> dt.datetime | None:
    """Return a datetime, date or ISO text as an aware UTC datetime (naive means UTC); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif not isinstance(value, dt.datetime):  # pandas Timestamp is a datetime; dates are not
        value = dt.datetime.combine(value, dt.time())
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def partition_path(root: Path, hour_start: dt.datetime) -> Path:
    """Return the ``date=YYYY-MM-DD/hour=HH`` folder of an hour under ``root``."""
    return root / f"date={hour_start:%Y-%m-%d}" / f"hour={hour_start:%H}"


def write_parquet_atomic(table: Any, folder: Path, name: str) -> Path:
    """Write an Arrow table as ``folder/name`` under a dot-name, then rename it (readers never see half a file)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, final)
    return final


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write a JSON file under a dot-name, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, sort_keys=True, default=str))
    os.replace(tmp, path)
