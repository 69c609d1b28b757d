"""The ``run-drift-report`` Prefect task: compare two window files with Evidently, write the reports.

The task reads the reference and current windows (:mod:`tasks.monitoring_windows`), leaves out
the columns that are not features (:func:`drift_columns`), runs :func:`tasks.evidently_drift.compute_drift`
(data quality over all rows, Evidently drift tests on seeded samples) and writes the HTML and
JSON reports (:func:`save_drift_report`).

Performance on labelled traffic is :mod:`tasks.monitoring_performance` (scikit-learn metrics,
not Evidently). Heavy libraries are imported inside the functions, so importing this module
stays fast.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.monitoring_policy import MonitoringPolicy
from tasks.evidently_drift import DriftComputation, DriftSummary, compute_drift, drift_kinds, not_enough_data
from tasks.exceptions import MonitoringError
from tasks.logs import run_logger
from tasks.monitoring_quality import json_scalar
from tasks.monitoring_stream import STREAM_ABOVE_ROWS, read_window_by_column
from tasks.monitoring_windows import read_window, resolve_columns, window_schema

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Column roles (DataContract) that are not model features and are never drift-tested.
_NOT_FEATURE_ROLES = {"datetime": "a date/time column", "identifier": "an identifier column", "target": "the target"}


def drift_columns(features: list[str], column_roles: dict[str, str] | None = None, time_column: str | None = None
                  ) -> tuple[list[str], dict[str, str]]:
    """Split the model's input columns into those to drift-test and those to skip (with the reason).

    The event-time column, and columns whose recorded role (``mlops.column_roles``) is ``datetime``,
    ``identifier`` or ``target``, are not features: time always "drifts", identifiers never repeat.

    Args:
        features: The champion's input columns (the ``mlops.features`` tag).
        column_roles: Column -> role (the ``mlops.column_roles`` tag), if recorded.
        time_column: The event-time column (the ``mlops.time_column`` tag), if any.

    Returns:
        The columns to test, and column -> reason for each skipped one.

    Examples:
        >>> keep, skipped = drift_columns(["age", "date", "customer_id"], {"customer_id": "identifier"}, "date")
        >>> keep, sorted(skipped)
        (['age'], ['customer_id', 'date'])
    """
    roles = column_roles or {}
    keep: list[str] = []
    skipped: dict[str, str] = {}
    for col in dict.fromkeys(features):
        if time_column and col == time_column:
            skipped[col] = f"the event-time column '{col}' (it selects the window)"
        elif roles.get(col) in _NOT_FEATURE_ROLES:
            skipped[col] = f"{_NOT_FEATURE_ROLES[roles[col]]} (role {roles[col]})"
        else:
            keep.append(col)
    return keep, skipped


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_drift_report(result: DriftComputation, policy: MonitoringPolicy, output_dir: str | Path,
                      report_name: str, windows: dict[str, str] | None = None, header: dict[str, str] | None = None,
                      quality: Any = None) -> DriftSummary:
    """Write ``<report_name>.json`` (always) and ``<report_name>.html`` (when tests ran).

    The JSON holds the summary, the policy, per-column quality figures and Evidently's
    own result dict (``metrics`` and ``tests``). The HTML (:func:`tasks.evidently_reports.report_html`)
    opens with a header (``header`` plus the row counts), the prediction's shares per window, then
    the drift widgets and, with ``quality``, the model-quality section.

    Args:
        result: Output of :func:`tasks.evidently_drift.compute_drift`.
        policy: The policy used (recorded in the JSON).
        output_dir: Folder to write into (created if needed).
        report_name: File stem; letters, digits, ``.``, ``_`` and ``-``.
        windows: Paths of the reference and current windows, recorded in the JSON.
        header: What the report describes (model, version, reference data rev, window ...).
        quality: Evidently snapshot of :func:`tasks.evidently_reports.quality_snapshot`, or None.

    Returns:
        The summary with ``html_path`` / ``json_path`` set.

    Examples:
        >>> save_drift_report(compute_drift(ref, cur, policy), policy, "reports/", "drift")  # doctest: +SKIP
    """
    if not _SAFE_NAME.match(report_name):
        raise MonitoringError(f"report_name {report_name!r} is not a plain file name: use letters, digits, "
                              "'.', '_' and '-' only.")
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MonitoringError(f"Cannot create the report folder {out}: {exc}. Pass a writable output_dir.") from exc
    summary = result.summary.model_copy()
    html_path = out / f"{report_name}.html"
    json_path = out / f"{report_name}.json"
    if result.snapshot is not None:
        from tasks.evidently_reports import report_html

        shown = {**(header or {}), "reference rows": f"{summary.reference_rows:,}",
                 "current rows": f"{summary.current_rows:,}", "verdict": summary.verdict.replace("_", " ")}
        _write_atomic(html_path, report_html(result.snapshot, summary, shown, quality))
        summary.html_path = str(html_path)
        evidently = json.loads(result.snapshot.json())
    else:
        evidently = None
    summary.json_path = str(json_path)
    document = {
        "summary": summary.model_dump(mode="json"),
        "policy": {name: getattr(policy, name) for name in type(policy).model_fields},
        "windows": windows or {},
        "quality": result.quality,
        "evidently": evidently,
    }
    _write_atomic(json_path, json.dumps(_json_safe(document), indent=1, default=json_scalar, allow_nan=False))
    return summary


def _json_safe(obj: Any) -> Any:
    """Replace NaN / infinity by None so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


@task(name="run-drift-report", cache_policy=NO_CACHE)
def run_drift_report(reference_path: str, current_path: str, policy: MonitoringPolicy, output_dir: str,
                     columns: list[str] | None = None, prediction_column: str | None = None,
                     report_name: str = "drift", column_roles: dict[str, str] | None = None,
                     time_column: str | None = None, header: dict[str, str] | None = None,
                     quality: dict[str, Any] | None = None) -> DriftSummary:
    """Compare a current data window with the reference using Evidently; write HTML and JSON.

    Reads Parquet or CSV (by extension), checks that the columns match, returns
    ``not_enough_data`` at once for a window smaller than ``policy.min_window_rows``,
    checks data quality on all rows, samples large windows to ``policy.max_sample_rows``
    and runs the drift tests the policy names. A drift breach is a result, not an error.

    Args:
        reference_path: Reference window (e.g. the champion's training data).
        current_path: Current window (e.g. a day of the inference log).
        policy: The monitoring policy block.
        output_dir: Folder for ``<report_name>.html`` and ``<report_name>.json``.
        columns: Feature columns to compare (all reference columns but the prediction when None).
        prediction_column: Model output column; its drift is reported as ``prediction_drift``.
        report_name: File stem of the report files.
        column_roles: Column -> role (``mlops.column_roles``): datetime / identifier columns are skipped.
        time_column: The event-time column (``mlops.time_column``): skipped, it is not a feature.
        header: What the report describes, shown at the top of the HTML (model, version, reference
            data rev, window); the row counts are added.
        quality: Model-quality section from the current window's labelled rows:
            ``{"task_type": ..., "label": "label", "positive_label": ...}`` (None: no section).

    Returns:
        The :class:`DriftSummary` (``skipped_columns`` says what was not tested and why).

    Raises:
        MonitoringError: If a file is missing or unreadable, or columns are missing.

    Examples:
        >>> from prefect import flow
        >>> from blocks.monitoring_policy import MonitoringPolicy
        >>> @flow
        ... def monitor() -> DriftSummary:
        ...     policy = MonitoringPolicy.load("default-monitoring")
        ...     return run_drift_report("data/train.parquet", "logs/2026-05-01.parquet", policy,
        ...                             "reports/2026-05-01", prediction_column="prediction")
    """
    logger = run_logger()
    started = time.perf_counter()
    ref_file, cur_file = Path(reference_path), Path(current_path)
    ref_names, ref_rows = window_schema(ref_file, "reference")
    cur_names, cur_rows = window_schema(cur_file, "current")
    candidates = columns if columns is not None else [c for c in ref_names if c != prediction_column]
    candidates, skipped = drift_columns(candidates, column_roles, time_column)
    features = resolve_columns(ref_names, cur_names, candidates, prediction_column, str(ref_file), str(cur_file))
    wanted = features + ([prediction_column] if prediction_column else [])
    windows = {"reference": str(ref_file), "current": str(cur_file)}
    small = None if ref_rows is None or cur_rows is None else not_enough_data(ref_rows, cur_rows, policy, started,
                                                                               skipped)
    if small is not None:
        result = small
        logger.info(result.summary.message)
    else:
        reference = read_window(ref_file, wanted, "reference")
        stream = cur_rows is not None and cur_rows > STREAM_ABOVE_ROWS
        logger.info("Comparing %s current rows with %s reference rows on %s columns%s", cur_rows or "the",
                    len(reference), len(features), " (read column by column)" if stream else "")
        if stream:  # larger than memory allows: quality over all rows, drift on the seeded sample
            numerical, categorical = drift_kinds(reference, features, skipped, logger)
            current, issues, figures, total = read_window_by_column(cur_file, wanted, reference, numerical,
                                                                    categorical, policy)
            result = compute_drift(reference, current, policy, features, prediction_column, logger=logger,
                                   skipped=skipped, current_rows=total, current_quality=(issues, figures))
        else:
            current = read_window(cur_file, wanted, "current")
            result = compute_drift(reference, current, policy, features, prediction_column, logger=logger,
                                   skipped=skipped)
        del reference, current
    snapshot = _quality(cur_file, cur_names, prediction_column, quality) if result.snapshot is not None else None
    if quality is not None:
        logger.info("Model-quality section: %s", "added" if snapshot is not None else "none (no labelled rows)")
    summary = save_drift_report(result, policy, output_dir, report_name, windows, header, snapshot)
    summary.seconds = time.perf_counter() - started
    logger.info("Drift report %s: verdict %s in %.1f s (%s)", report_name, summary.verdict, summary.seconds,
                summary.html_path or summary.json_path)
    return summary

def _quality(current: Path, names: list[str], prediction_column: str | None, quality: dict[str, Any] | None) -> Any:
    """Return the Evidently quality snapshot of the current window's labelled rows, or None."""
    label = (quality or {}).get("label", "label")
    if quality is None or not prediction_column or label not in names:
        return None
    from tasks.evidently_reports import quality_snapshot

    score = "score" if "score" in names and quality.get("task_type") == "binary" else None
    frame = read_window(current, [c for c in (label, prediction_column, score) if c], "current")
    return quality_snapshot(frame, quality.get("task_type", "binary"), label, prediction_column, score,
                            quality.get("positive_label"))


__all__ = ["DriftSummary", "drift_columns", "run_drift_report", "save_drift_report"]
