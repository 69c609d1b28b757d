"""Dataset files: read and write CSV, Parquet and JSON Lines, whatever the file is called.

The one place that turns a user's file into a frame (and back). The format comes from the
suffix (``.csv``; ``.parquet`` / ``.pq``; ``.jsonl`` / ``.ndjson``), but the first bytes decide
when the suffix lies: a CSV named ``.parquet`` is read as CSV, a Parquet file named ``.csv`` as
Parquet. Values are read as they are written: CSV and JSON Lines dates stay strings (parsing
them is the data contract's job, see :func:`blocks.data_contract.parse_datetime`).

Errors are :class:`~tasks.exceptions.DataVersioningError` naming the user's file, what is
wrong (with the offending line when the parser gives one) and what to do next.

Examples:
    >>> import pandas as pd
    >>> write_dataset(pd.DataFrame({"x": [1, 2]}), "/tmp/example.jsonl")  # doctest: +SKIP
    '/tmp/example.jsonl'
    >>> read_dataset("/tmp/example.jsonl")["x"].tolist()  # doctest: +SKIP
    [1, 2]
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from pydantic import BaseModel

from tasks.exceptions import DataVersioningError
from tasks.logs import run_logger
from tasks.system import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Suffix -> format.
SUFFIXES: dict[str, str] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                            ".ndjson": "jsonl"}
#: Format -> the suffix a file of that format gets.
CANONICAL_SUFFIX: dict[str, str] = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
_PARQUET_MAGIC = b"PAR1"
#: errno values of a file-system fault (read-only, full, no permission) rather than a bug.
FS_FAULTS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def storage_error(exc: OSError, path: str | Path, action: str) -> DataVersioningError:
    """Turn an ``OSError`` of the state folder into an error naming the path and the fix.

    Args:
        exc: The error (read-only file system, disk full, permission denied, ...).
        path: The file or folder that could not be written.
        action: What was being done, e.g. ``"stage the dataset"``.

    Returns:
        A :class:`DataVersioningError` to raise ``from exc``.
    """
    code = exc.errno
    if code == errno.EROFS:
        fix = ("the file system is read-only: remount it read-write, or point PREFECT_MLOPS_HOME "
               "(or the DvcRepository block's repo_path) at a writable folder")
    elif code in {errno.ENOSPC, errno.EDQUOT}:
        fix = "the disk is full: free space there (or move PREFECT_MLOPS_HOME to a larger disk)"
    elif code in {errno.EACCES, errno.EPERM}:
        fix = "permission denied: give this user write access to it, or move PREFECT_MLOPS_HOME"
    elif code == errno.ENOTDIR:
        fix = "a part of that path is a file, not a folder: move the file or point PREFECT_MLOPS_HOME elsewhere"
    elif code == errno.ENOENT:
        fix = "the folder is missing: create it (or fix PREFECT_MLOPS_HOME) and rerun"
    else:
        fix = f"{exc.strerror or exc}: check the folder and rerun"
    return DataVersioningError(f"Cannot {action}: writing {path} failed, {fix}. Nothing was versioned; the data "
                               "repository still points at the last good data.")


def fs_advice(text: str) -> str:
    """Return the fix for a file-system fault named in a tool's message, or ''."""
    if "Read-only file system" in text:
        return (". The data repo's folder is read-only: remount it read-write (or point the DvcRepository block / "
                "PREFECT_MLOPS_HOME at a writable folder) and rerun; nothing was committed")
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return ". The disk is full: free space there and rerun; nothing was committed"
    return ""


def os_fault(exc: BaseException) -> OSError | None:
    """Return the first OSError of a file-system fault in an exception's chain (DVC wraps them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FS_FAULTS:
            return current
        current = current.__cause__ or current.__context__
    return None


def _sniff(path: Path) -> str | None:
    """Return the format the first bytes show (parquet, jsonl or csv), None for binary junk."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if b"\x00" in head:
        return None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        first = text.split(b"\n", 1)[0]
        with contextlib.suppress(ValueError):
            if isinstance(json.loads(first), dict) or len(first) == len(head):  # an object, or a very long line
                return "jsonl"
    return "csv"


def detect_format(path: str | Path) -> str:
    """Return the format of a dataset file: its content decides when the suffix lies.

    Args:
        path: The file.

    Returns:
        ``csv``, ``parquet`` or ``jsonl``.

    Raises:
        DataVersioningError: If the file is missing, empty or none of the three formats.

    Examples:
        >>> detect_format("customers.parquet")  # doctest: +SKIP
        'csv'
    """
    path = Path(path)
    if not path.is_file():
        raise DataVersioningError(f"Dataset file {path} does not exist: pass the path of a CSV, Parquet or "
                                  "JSON Lines file.")
    if path.stat().st_size == 0:
        raise DataVersioningError(f"Dataset file {path} is empty (0 bytes): export the data again and retry.")
    claimed = SUFFIXES.get(path.suffix.lower())
    sniffed = _sniff(path)
    if sniffed is None:
        raise DataVersioningError(f"Dataset file {path} is binary but not Parquet (no PAR1 magic bytes): save it "
                                  "as CSV, Parquet or JSON Lines (.csv, .parquet, .jsonl).")
    if claimed is not None and claimed != sniffed:
        run_logger().warning("%s is named %s but holds %s: reading it as %s", path, path.suffix, sniffed, sniffed)
    return sniffed  # a CSV header never is a JSON object, and only Parquet starts with PAR1


def _line(path: Path, number: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for index, text in enumerate(handle, start=1):
            if index == number:
                return text.rstrip("\n")[:200]
    return ""


def _read_error(path: Path, fmt: str, exc: Exception) -> DataVersioningError:
    message = str(exc).strip()
    found = re.search(r"line (\d+)", message) if fmt in {"csv", "jsonl"} else None
    where = ""
    if found:
        number = int(found.group(1))
        where = f" Line {number}: {_line(path, number)!r}."
    return DataVersioningError(f"Cannot read dataset {path} as {fmt}: {message}.{where} Fix the file (or save it "
                               "as Parquet) and retry.")


def read_dataset(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON Lines file into a frame.

    Args:
        path: The file; its format is detected (:func:`detect_format`) unless ``fmt`` is given.
        fmt: ``csv``, ``parquet`` or ``jsonl`` to skip detection.

    Returns:
        The frame; CSV / JSON Lines dates stay strings.

    Raises:
        DataVersioningError: If the file is missing, empty or cannot be parsed (naming the file and line).

    Examples:
        >>> read_dataset("data/customers.csv").shape  # doctest: +SKIP
        (5000, 12)
    """
    import pandas as pd

    path = Path(path)
    fmt = fmt or detect_format(path)
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False, convert_dates=False, keep_default_dates=False)
        return pd.read_csv(path, low_memory=False)
    except OSError as exc:
        raise DataVersioningError(f"Cannot read dataset {path}: {exc}. Check the file and its permissions.") from exc
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise _read_error(path, fmt, exc) from exc
    except Exception as exc:  # pyarrow raises its own ArrowInvalid etc. (ValueError subclasses, mostly)
        raise _read_error(path, fmt, exc) from exc


def write_dataset(frame: pd.DataFrame, path: str | Path, fmt: str | None = None) -> str:
    """Write a frame atomically (temporary file, then rename) in the format its suffix names.

    Args:
        frame: The data (its index is not written).
        path: Target file; ``.csv``, ``.parquet`` / ``.pq`` or ``.jsonl`` / ``.ndjson``.
        fmt: Format to write regardless of the suffix.

    Returns:
        The path written.

    Raises:
        DataVersioningError: For an unknown suffix, or when the folder is read-only or full.

    Examples:
        >>> import pandas as pd
        >>> write_dataset(pd.DataFrame({"x": [1]}), "/tmp/x.parquet")  # doctest: +SKIP
        '/tmp/x.parquet'
    """
    path = Path(path)
    fmt = fmt or SUFFIXES.get(path.suffix.lower())
    if fmt not in CANONICAL_SUFFIX:
        raise DataVersioningError(f"Cannot write dataset {path}: unknown suffix {path.suffix!r}; use one of "
                                  f"{sorted(SUFFIXES)}.")
    try:
        with atomic_path(path) as partial:
            if fmt == "parquet":
                frame.to_parquet(partial, index=False)
            elif fmt == "jsonl":
                frame.to_json(partial, orient="records", lines=True, date_format="iso", force_ascii=False)
            else:
                frame.to_csv(partial, index=False)
    except OSError as exc:
        raise storage_error(exc, path, "write the dataset") from exc
    return str(path)


def place_dataset(source: str | Path, target: str | Path, action: str = "place the dataset") -> None:
    """Write ``source`` to ``target`` (atomically) in the format the target's suffix names, converting if needed.

    Args:
        source: A CSV, Parquet or JSON Lines file (its content decides its format).
        target: The file to write; a file already in the target's format is copied byte for byte.
        action: What is being done, for the error message.

    Raises:
        DataVersioningError: If the source cannot be read, or the target's folder is read-only or full.
    """
    source, target = Path(source), Path(target)
    source_format, target_format = detect_format(source), SUFFIXES[target.suffix.lower()]
    try:
        if source_format == target_format:
            with atomic_path(target) as partial:
                shutil.copyfile(source, partial)
        else:
            write_dataset(read_dataset(source, source_format), target, target_format)
    except OSError as exc:
        raise storage_error(exc, target, action) from exc


class StagedDataset(BaseModel):
    """A user's file in the stored format, waiting for validation before it is versioned."""

    path: str
    md5: str
    size: int
    source: str
    source_format: str
    stored_format: str
    converted: bool


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@task(name="stage-dataset")
def stage_dataset(source_path: str, dataset_path: str, staging_dir: str) -> StagedDataset:
    """Put a user's file into the stored format of ``dataset_path``, under its content hash, for validation.

    The stored format is the one ``dataset_path``'s suffix names (the default ``data/train.parquet``
    stores Parquet): a file of another format (or a CSV that merely carries a ``.parquet`` name)
    is converted, a file already in that format is copied byte for byte. The staged file is
    ``<staging_dir>/<md5><suffix>``, exactly the bytes that :func:`tasks.dvc_data.version_dataset`
    will version (same md5) and that :func:`tasks.dvc_data.pull_dataset` would fetch, so pointing
    ``staging_dir`` at the pull cache makes the later pull free.

    Args:
        source_path: The user's CSV, Parquet or JSON Lines file.
        dataset_path: Path of the dataset inside the data repository.
        staging_dir: Folder for staged files.

    Returns:
        A :class:`StagedDataset`.

    Raises:
        DataVersioningError: If the file is missing, empty or unreadable (naming it), ``dataset_path``
            has an unknown suffix, or the staging folder is read-only or full (naming it and the fix).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def stage(path: str) -> str:
        ...     return stage_dataset(path, "data/train.parquet", "/tmp/staging").md5
    """
    source = Path(source_path)
    suffix = Path(dataset_path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataVersioningError(f"dataset_path {dataset_path!r} has suffix {suffix!r}: use one of "
                                  f"{sorted(SUFFIXES)} (the stored format follows it).")
    source_format, stored_format = detect_format(source), SUFFIXES[suffix]
    folder = Path(staging_dir)
    partial = folder / f".staging-{os.getpid()}-{source.name}{suffix}"
    try:
        place_dataset(source, partial, f"stage {source}")
        md5 = _md5(partial)
        staged = folder / f"{md5}{suffix}"
        os.replace(partial, staged)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise storage_error(exc, folder, f"stage {source}") from exc
    if source_format != stored_format:
        run_logger().info("Converted %s (%s) to %s for %s (md5 %s)", source, source_format, stored_format,
                          dataset_path, md5)
    return StagedDataset(path=str(staged), md5=md5, size=staged.stat().st_size, source=str(source),
                         source_format=source_format, stored_format=stored_format,
                         converted=source_format != stored_format)
