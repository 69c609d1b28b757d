"""Reading the window files that monitoring compares: Parquet or CSV, whole or some columns.

:mod:`tasks.monitoring_data` writes the windows (from the inference log, the reference, the
feedback set); this module reads them back for the drift report
(:mod:`tasks.evidently_monitoring`) and the performance check (:mod:`tasks.monitoring_performance`),
checks that two windows share the columns to compare, and samples large windows reproducibly.

Heavy libraries (pandas, numpy, pyarrow) are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tasks.exceptions import MonitoringError

if TYPE_CHECKING:
    import pandas as pd

_PARQUET_SUFFIXES = {".parquet", ".pq"}
_CSV_SUFFIXES = {".csv"}


def window_schema(path: Path, what: str) -> tuple[list[str], int | None]:
    """Column names and (for Parquet) the row count of a window file, without reading its data."""
    _check_file(path, what)
    suffix = path.suffix.lower()
    try:
        if suffix in _PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            names = [n for n in parquet.schema_arrow.names if not n.startswith("__index_level_")]
            return names, parquet.metadata.num_rows
        import pandas as pd

        return [str(c) for c in pd.read_csv(path, nrows=0).columns], None
    except Exception as exc:  # noqa: BLE001 - any reader error is bad input here
        raise MonitoringError(f"Cannot read the schema of the {what} window {path}: {exc}. "
                              "Check that it is a valid Parquet or CSV file.") from exc


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise MonitoringError(f"The {what} window {path} does not exist: pass the path of a Parquet or CSV file.")
    if path.suffix.lower() not in _PARQUET_SUFFIXES | _CSV_SUFFIXES:
        raise MonitoringError(f"The {what} window {path} is neither Parquet (.parquet, .pq) nor CSV (.csv): "
                              "convert it to one of these.")



def read_window(path: str | Path, columns: list[str] | None = None, what: str = "data") -> pd.DataFrame:
    """Read a Parquet or CSV window, optionally only some columns.

    Args:
        path: ``.parquet`` / ``.pq`` or ``.csv`` file.
        columns: Columns to read (all when None).
        what: Name of the window in error messages (``reference``, ``current``).

    Returns:
        The frame.

    Raises:
        MonitoringError: If the file is missing, not Parquet / CSV, or unreadable.

    Examples:
        >>> read_window("inference/2026-05-01.parquet", ["age", "income"])  # doctest: +SKIP
    """
    import pandas as pd

    path = Path(path)
    _check_file(path, what)
    try:
        if path.suffix.lower() in _PARQUET_SUFFIXES:
            return pd.read_parquet(path, columns=columns)
        return pd.read_csv(path, usecols=columns)
    except Exception as exc:  # noqa: BLE001 - any reader error is bad input here
        raise MonitoringError(f"Cannot read the {what} window {path}: {exc}. "
                              "Check that it is a valid Parquet or CSV file.") from exc



def resolve_columns(reference_columns: list[str], current_columns: list[str], columns: list[str] | None,
                    prediction_column: str | None, reference_name: str, current_name: str) -> list[str]:
    """Return the feature columns to compare; raise MonitoringError naming every column a window lacks.

    Args:
        reference_columns: Columns of the reference window.
        current_columns: Columns of the current window.
        columns: Feature columns asked for (None: every reference column but the prediction).
        prediction_column: The model output column, which both windows must have too (None: none).
        reference_name: The reference window's name in messages (its path).
        current_name: The current window's name in messages.

    Returns:
        The feature columns, without the prediction column.

    Examples:
        >>> resolve_columns(["age", "prediction"], ["age", "prediction"], None, "prediction", "ref", "cur")
        ['age']
    """
    if columns is None:
        features = [c for c in reference_columns if c != prediction_column]
    else:
        features = list(dict.fromkeys(c for c in columns if c != prediction_column))
    if not features:
        raise MonitoringError("No feature columns to compare: pass columns=[...] naming at least one column "
                              "that both the reference and the current window have.")
    wanted = features + ([prediction_column] if prediction_column else [])
    reference_set, current_set = set(reference_columns), set(current_columns)
    problems = []
    missing_ref = [c for c in wanted if c not in reference_set]
    missing_cur = [c for c in wanted if c not in current_set]
    if missing_ref:
        problems.append(f"the reference ({reference_name}) lacks column(s) {missing_ref}")
    if missing_cur:
        problems.append(f"the current window ({current_name}) lacks column(s) {missing_cur}")
    if problems:
        advice = ("Add the missing columns to the data (check the job that writes the window), or pass "
                  "columns=[...] listing only features both windows share")
        if prediction_column and prediction_column in missing_ref + missing_cur:
            advice += f", or pass prediction_column=None if '{prediction_column}' is not logged"
        raise MonitoringError(f"Cannot compare the windows: {'; '.join(problems)}. {advice}.")
    return features



def sample_rows(frame: pd.DataFrame, max_rows: int, seed: int, stream: int = 0) -> tuple[pd.DataFrame, bool]:
    """Return at most ``max_rows`` rows, drawn without replacement with a fixed seed.

    Rows keep their original order. ``stream`` separates the draws of different windows
    (0 = reference, 1 = current) so both are independent but reproducible.

    Args:
        frame: Rows to sample.
        max_rows: Largest number of rows to keep.
        seed: Seed of the draw.
        stream: Independent sub-stream of the seed.

    Returns:
        The (possibly same) frame and whether it was sampled.

    Examples:
        >>> import pandas as pd
        >>> part, sampled = sample_rows(pd.DataFrame({"x": range(10)}), 3, seed=1)
        >>> len(part), sampled
        (3, True)
    """
    import numpy as np

    n = len(frame)
    if n <= max_rows:
        return frame, False
    rng = np.random.default_rng([seed, stream])
    index = np.sort(rng.choice(n, size=max_rows, replace=False))
    return frame.take(index), True

