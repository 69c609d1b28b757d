"""Monitoring windows larger than memory: the inference log streamed to a window file, and read column by column.

Up to :data:`STREAM_ABOVE_ROWS` rows, windows are read whole (pandas), as in
:mod:`tasks.monitoring_data` and :mod:`tasks.monitoring_windows`. Above it:

* :func:`stream_inference_window` writes an arrival-time window of the inference log batch by batch
  (``pyarrow.dataset`` over the window's hour partitions, a timestamp filter pushed down to the
  scan, the ground truth joined per batch, a ``ParquetWriter``): memory holds one batch;
* :func:`read_window_by_column` reads the window file one column at a time: each column is checked
  for data quality over all rows (:func:`tasks.monitoring_quality.check_data_quality`, the same
  rules) and sampled with the same seeded draw as :func:`tasks.monitoring_windows.sample_rows`,
  so the drift tests see the sample they would see with the whole frame in memory. Memory holds
  one column and the sample.

Measured with ``benchmarks/bench_drift.py --sizes 10000000 --variants ours-task,scipy-ks`` (time,
peak memory, and the drifted columns against KS on all rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocks.monitoring_policy import MonitoringPolicy
from tasks.logs import run_logger
from tasks.monitoring_quality import check_data_quality, check_numeric_types

if TYPE_CHECKING:
    import pandas as pd

#: Windows above this many rows are streamed (export) and read column by column (drift). At 1M x 20
#: the whole-frame path takes 3.1 s and 0.8 GB (``bench_drift.py --sizes 1000000``); 10M would need ~8 GB.
STREAM_ABOVE_ROWS = 1_000_000
_BATCH_ROWS = 200_000


def sample_index(n_rows: int, max_rows: int, seed: int, stream: int) -> Any | None:
    """Positions of the seeded sample of ``max_rows`` out of ``n_rows`` (None: no sampling needed).

    The same draw as :func:`tasks.monitoring_windows.sample_rows`, so both paths test the same rows.

    Examples:
        >>> sample_index(10, 3, seed=1, stream=1).tolist() == sorted(sample_index(10, 3, seed=1, stream=1).tolist())
        True
        >>> sample_index(3, 10, seed=1, stream=1) is None
        True
    """
    import numpy as np

    if n_rows <= max_rows:
        return None
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(n_rows, size=max_rows, replace=False))


def read_window_by_column(path: str | Path, columns: list[str], reference: pd.DataFrame, numerical: list[str],
                          categorical: list[str], policy: MonitoringPolicy
                          ) -> tuple[pd.DataFrame, list[str], dict[str, dict[str, Any]], int]:
    """Read a large Parquet window column by column: quality over all rows, and the seeded drift sample.

    Args:
        path: The current window (Parquet).
        columns: Columns to read (features and the prediction column).
        reference: The reference rows (the quality rules compare with them).
        numerical: Numerical columns (type and range checks).
        categorical: Categorical columns (unseen-category check).
        policy: Tolerances, ``max_sample_rows`` and ``sample_seed``.

    Returns:
        The sampled rows of ``columns``, the quality issues, the per-column quality figures, and
        the window's row count.

    Examples:
        >>> sample, issues, quality, rows = read_window_by_column(  # doctest: +SKIP
        ...     "window.parquet", ["age", "prediction"], reference, ["age"], [], MonitoringPolicy())
    """
    import pandas as pd
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    n_rows = parquet.metadata.num_rows
    index = sample_index(n_rows, policy.max_sample_rows, policy.sample_seed, stream=1)
    sample: dict[str, Any] = {}
    issues: list[str] = []
    quality: dict[str, dict[str, Any]] = {}
    for column in columns:
        values = parquet.read(columns=[column]).column(0).to_pandas()
        frame = pd.DataFrame({column: values})
        kinds = ([column] if column in numerical else [], [column] if column in categorical else [])
        if kinds[0]:
            check_numeric_types(frame, kinds[0])
        if kinds[0] or kinds[1]:
            found, stats = check_data_quality(reference[[column]], frame, kinds[0], kinds[1], policy)
            issues += found
            quality.update(stats)
        sample[column] = values if index is None else values.take(index).reset_index(drop=True)
        del values, frame
    return pd.DataFrame(sample), issues, quality, n_rows


def stream_inference_window(log_dir: str | None, model_name: str, start: str, end: str, output_path: str,
                            model_version: str | None = None) -> dict[str, Any]:
    """Write the predictions logged in ``[start, end)`` (with any labels) to Parquet, one batch at a time.

    The same rows and columns as ``read_inference_log(..., with_labels=True)`` filtered the same way,
    in log order (hour partitions, then files) rather than sorted by timestamp.

    Args:
        log_dir: Inference log root (None: the embedded default).
        model_name: Registered model name.
        start: Window start, ISO 8601 (UTC when naive).
        end: Window end, ISO 8601 (UTC when naive).
        output_path: Parquet file to write.
        model_version: Only predictions of this version (None: all versions).

    Returns:
        ``{"rows", "labeled_rows", "versions", "first_arrival"}``.

    Examples:
        >>> stream_inference_window(None, "churn-classifier", "2026-05-01", "2026-05-02",  # doctest: +SKIP
        ...                         "/tmp/window.parquet")["rows"]
        10000000
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from tasks.inference_log import (
        BASE_COLUMNS,
        LABEL_COLUMNS,
        OUTPUT_COLUMNS,
        PREDICTIONS_DIR,
        RESERVED_COLUMNS,
        files_in_window,
        model_root,
        read_ground_truth,
        to_utc,
    )

    start_at, end_at = to_utc(start), to_utc(end)
    files = files_in_window(model_root(log_dir, model_name) / PREDICTIONS_DIR, start_at, end_at)
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive") if files else None
    labels = read_ground_truth(log_dir, model_name).set_index("request_id")
    counts: dict[str, Any] = {"rows": 0, "labeled_rows": 0, "versions": set(), "first_arrival": None}
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        if schema is not None:
            features = [n for n in schema.names if n not in RESERVED_COLUMNS]
            order = list(BASE_COLUMNS) + features + list(OUTPUT_COLUMNS)
            where = (ds.field("timestamp") >= pa.scalar(start_at, pa.timestamp("us", tz="UTC"))) & \
                (ds.field("timestamp") < pa.scalar(end_at, pa.timestamp("us", tz="UTC")))
            if model_version is not None:
                where &= ds.field("model_version") == str(model_version)
            scanner = ds.dataset(files, schema=schema, format="parquet").scanner(
                columns=[c for c in order if c in schema.names], filter=where, batch_size=_BATCH_ROWS)
            for batch in scanner.to_batches():
                if not batch.num_rows:
                    continue
                frame = batch.to_pandas()
                if "probabilities" not in frame.columns:
                    frame["probabilities"] = None
                frame = frame[order]
                joined = labels.reindex(frame["request_id"])
                for column in LABEL_COLUMNS:  # ``.array`` keeps the dtype (microsecond UTC timestamps)
                    frame[column] = pd.Series(joined[column].array, index=frame.index)
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table.cast(writer.schema, safe=False))
                counts["rows"] += table.num_rows
                counts["labeled_rows"] += int(frame["label"].notna().sum())
                counts["versions"].update(frame["model_version"].dropna().astype(str).unique().tolist())
                first = pc.min(batch.column("timestamp")).as_py()
                if first is not None and (counts["first_arrival"] is None or first < counts["first_arrival"]):
                    counts["first_arrival"] = first
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # nothing in the window: an empty file with the whole frame's columns
        empty = {c: pd.Series(dtype="object") for c in list(BASE_COLUMNS) + list(OUTPUT_COLUMNS) + list(LABEL_COLUMNS)}
        pd.DataFrame(empty).to_parquet(path, index=False)
    counts["versions"] = sorted(counts["versions"])
    counts["first_arrival"] = counts["first_arrival"].isoformat() if counts["first_arrival"] else None
    return counts


def export_large_window(log_dir: str | None, model_name: str, start: str, end: str, output_path: str,
                        model_version: str | None = None) -> Any | None:
    """Write an arrival-time window of more than :data:`STREAM_ABOVE_ROWS` rows with :func:`stream_inference_window`.

    Args:
        log_dir: Inference log root (None: the embedded default).
        model_name: Registered model name.
        start: Window start, ISO 8601 (UTC when naive).
        end: Window end, ISO 8601 (UTC when naive).
        output_path: Parquet file to write.
        model_version: Only predictions of this version (None: all versions).

    Returns:
        The :class:`tasks.monitoring_data.WindowFile`, or None when the window's files hold fewer rows
        (the caller reads it whole, as before); counted from the Parquet footers, without reading data.

    Examples:
        >>> export_large_window(None, "churn", "2026-05-01", "2026-05-02", "/tmp/w.parquet")  # doctest: +SKIP
    """
    import pyarrow.parquet as pq

    from tasks.inference_log import PREDICTIONS_DIR, files_in_window, model_root, to_utc
    from tasks.monitoring_data import WindowFile

    files = files_in_window(model_root(log_dir, model_name) / PREDICTIONS_DIR, to_utc(start), to_utc(end))
    if sum(pq.read_metadata(f).num_rows for f in files) <= STREAM_ABOVE_ROWS:
        return None
    counts = stream_inference_window(log_dir, model_name, start, end, output_path, model_version)
    run_logger().info("Window %s .. %s of %s by arrival time: %d predictions, %d labelled (streamed)", start, end,
                      model_name, counts["rows"], counts["labeled_rows"])
    return WindowFile(path=str(Path(output_path)), rows=counts["rows"], labeled_rows=counts["labeled_rows"],
                      start=start, end=end, versions=counts["versions"], time_basis="arrival", time_column=None,
                      unparsed_time_rows=0, note="", first_arrival=counts["first_arrival"])
