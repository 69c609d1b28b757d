"""Monitoring with Evidently 0.7: data drift, data quality and model performance.

The pure computation lives in plain functions (:func:`compute_drift`,
:func:`compute_performance`) that benchmarks and notebooks call without Prefect; the
Prefect tasks (:func:`run_drift_report`, :func:`evaluate_performance`) read the files,
call them and write the reports.

Scale: a window larger than ``policy.max_sample_rows`` is sampled (seeded, so the same
data gives the same verdict) before the drift tests run, so a 1,000,000-row window costs
about as much as a 50,000-row one. Data-quality checks (missing values, values outside
the reference range, unseen categories) are cheap and always count every row.

Heavy libraries (pandas, numpy, Evidently, scikit-learn) are imported inside the
functions, so importing this module stays fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.monitoring_policy import P_VALUE_METHODS, MonitoringPolicy
from tasks.exceptions import MonitoringError
from tasks.logs import run_logger

if TYPE_CHECKING:
    import pandas as pd

_log = logging.getLogger(__name__)

_PARQUET_SUFFIXES = {".parquet", ".pq"}
_CSV_SUFFIXES = {".csv"}
#: Categorical columns with more reference categories than this get no out-of-list metric in the
#: Evidently report (the list would bloat it); the summary still counts unseen categories.
_MAX_LISTED_CATEGORIES = 100
#: Integer columns with at most this many distinct reference values are treated as categorical.
_MAX_INT_CATEGORIES = 5
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Column roles (DataContract) that are not model features and are never drift-tested.
_NOT_FEATURE_ROLES = {"datetime": "a date/time column", "identifier": "an identifier column", "target": "the target"}
#: A text column with more distinct reference values than this, and more than half of its rows distinct,
#: reads as an identifier (no role recorded): a drift test on it says nothing.
_MAX_IDENTIFIER_LIKE = 100


class DriftSummary(BaseModel):
    """Verdict of one drift report; small and JSON-serialisable.

    ``verdict`` is ``drift`` when at least ``policy.drift_share`` of the compared columns
    drifted, ``no_drift`` otherwise, and ``not_enough_data`` when either window has fewer
    than ``policy.min_window_rows`` rows (then no test ran and nothing should alarm).
    The prediction column, if any, is tested separately (``prediction_drift``) and does
    not count in ``drift_share``.
    """

    verdict: Literal["drift", "no_drift", "not_enough_data"]
    dataset_drift: bool = Field(False, description="Share of drifted columns >= policy.drift_share.")
    drift_share: float = Field(0.0, description="Share of compared columns that drifted.")
    drifted_columns: list[str] = Field(default_factory=list)
    column_scores: dict[str, float] = Field(
        default_factory=dict, description="Column -> drift score (p-value or distance, see column_methods)."
    )
    column_methods: dict[str, str] = Field(default_factory=dict, description="Column -> Evidently stattest name.")
    column_thresholds: dict[str, float] = Field(default_factory=dict, description="Column -> threshold applied.")
    quality_issues: list[str] = Field(default_factory=list, description="Data-quality problems, over all rows.")
    prediction_drift: bool | None = Field(None, description="Drift of the prediction column; None without one.")
    prediction_score: float | None = None
    reference_rows: int = 0
    current_rows: int = 0
    sampled: bool = Field(False, description="Whether either window was sampled to policy.max_sample_rows.")
    skipped_columns: dict[str, str] = Field(
        default_factory=dict, description="Column -> why it was not tested (time column, identifier, datetime ...)."
    )
    html_path: str | None = None
    json_path: str | None = None
    seconds: float = 0.0
    message: str = ""


@dataclass
class DriftComputation:
    """What :func:`compute_drift` returns: the summary, plus what the report files need."""

    summary: DriftSummary
    snapshot: Any = None
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


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


def _resolve_columns(reference_columns: list[str], current_columns: list[str], columns: list[str] | None,
                     prediction_column: str | None, reference_name: str, current_name: str) -> list[str]:
    """Feature columns to compare; raises MonitoringError naming every missing column."""
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


def _identifier_like(series: pd.Series) -> bool:
    """Tell whether a text column barely repeats (ids, free text): no drift test means anything on it."""
    values = series.dropna()
    distinct = values.nunique()
    return distinct > _MAX_IDENTIFIER_LIKE and distinct > 0.5 * len(values)


def _column_kinds(reference: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Split columns into numerical, categorical and unsupported (datetimes, ...) by reference dtype."""
    import pandas as pd
    from pandas.api import types

    numerical: list[str] = []
    categorical: list[str] = []
    unsupported: list[str] = []
    for col in columns:
        series = reference[col]
        if (types.is_bool_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype)
                or types.is_object_dtype(series) or types.is_string_dtype(series)):
            categorical.append(col)
        elif types.is_integer_dtype(series) and series.nunique() <= _MAX_INT_CATEGORIES:
            categorical.append(col)
        elif types.is_numeric_dtype(series) and not types.is_complex_dtype(series):
            numerical.append(col)
        else:
            unsupported.append(col)
    return numerical, categorical, unsupported


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


def check_data_quality(reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str],
                       categorical: list[str], policy: MonitoringPolicy
                       ) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Compare data quality of the current window with the reference, over all rows.

    Args:
        reference: Reference rows.
        current: Current rows.
        numerical: Numerical columns (range check).
        categorical: Categorical columns (unseen-category check).
        policy: Tolerances.

    Returns:
        Human-readable issues, and per-column figures (missing shares, reference range,
        out-of-range share, unseen categories).

    Examples:
        >>> import pandas as pd
        >>> ref, cur = pd.DataFrame({"x": [1.0, 2.0]}), pd.DataFrame({"x": [1.5, 9.0]})
        >>> check_data_quality(ref, cur, ["x"], [], MonitoringPolicy())[0]  # doctest: +ELLIPSIS
        ["column 'x': 50.0% of values outside the reference range [1, 2]..."]
    """
    import numpy as np

    issues: list[str] = []
    stats: dict[str, dict[str, Any]] = {}
    for col in numerical + categorical:
        cur_values = current[col]
        cur_missing = float(cur_values.isna().mean()) if len(cur_values) else 0.0
        ref_missing = float(reference[col].isna().mean()) if len(reference) else 0.0
        non_null = int(len(cur_values) - cur_values.isna().sum())
        entry: dict[str, Any] = {"missing_share": cur_missing, "reference_missing_share": ref_missing}
        stats[col] = entry
        if ref_missing >= 1.0:
            issues.append(f"column '{col}': every value is missing in the reference")
            continue
        if non_null == 0:
            issues.append(f"column '{col}': every value is missing in the current window")
            continue
        if cur_missing - ref_missing > policy.missing_share_tolerance:
            issues.append(f"column '{col}': {cur_missing:.1%} missing values vs {ref_missing:.1%} in the reference "
                          f"(tolerance +{policy.missing_share_tolerance:.1%})")
        if col in numerical:
            ref_arr = reference[col].to_numpy(dtype="float64", na_value=np.nan)
            lo, hi = float(np.nanmin(ref_arr)), float(np.nanmax(ref_arr))
            cur_arr = cur_values.to_numpy(dtype="float64", na_value=np.nan)
            outside = int(np.count_nonzero((cur_arr < lo) | (cur_arr > hi)))
            share = outside / non_null
            entry.update({"reference_min": lo, "reference_max": hi, "out_of_range_share": share})
            if share > policy.out_of_range_tolerance:
                issues.append(f"column '{col}': {share:.1%} of values outside the reference range "
                              f"[{lo:g}, {hi:g}] (tolerance {policy.out_of_range_tolerance:.1%})")
        else:
            known = set(reference[col].dropna().unique().tolist())
            counts = cur_values.value_counts(dropna=True)
            unseen = counts[~counts.index.isin(list(known))]
            share = float(unseen.sum()) / non_null
            entry.update({"reference_categories": len(known), "new_category_share": share,
                          "new_categories": [_plain(v) for v in unseen.index[:20].tolist()]})
            if share > policy.new_category_tolerance:
                shown = ", ".join(repr(_plain(v)) for v in unseen.index[:5].tolist())
                more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
                issues.append(f"column '{col}': {len(unseen)} categor{'y' if len(unseen) == 1 else 'ies'} unseen in "
                              f"the reference ({shown}{more}) in {share:.1%} of rows "
                              f"(tolerance {policy.new_category_tolerance:.1%})")
    return issues, stats


def _plain(value: Any) -> Any:
    """Return a JSON-friendly scalar."""
    if hasattr(value, "item"):
        value = value.item()
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text_if_mixed(reference: pd.Series, current: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Compare labels as text when the two sides' dtypes differ (1 vs "1", bool vs "True")."""
    if reference.dtype == current.dtype:
        return reference, current

    def text(series: pd.Series) -> pd.Series:
        return series.map(lambda v: None if v is None or v != v else str(_plain_label(v))).astype(object)

    return text(reference), text(current)


def _plain_label(value: Any) -> Any:
    value = _plain(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _too_small(reference_rows: int, current_rows: int, policy: MonitoringPolicy) -> bool:
    """Whether either side is below its minimum (the current window's, or the reference's)."""
    return current_rows < policy.min_window_rows or reference_rows < policy.min_reference_rows


def _not_enough(reference_rows: int, current_rows: int, policy: MonitoringPolicy, started: float) -> DriftSummary:
    if current_rows < policy.min_window_rows:
        unmet = f"the current window has {current_rows} rows, fewer than min_window_rows={policy.min_window_rows}"
    else:
        unmet = (f"the reference has {reference_rows} rows, fewer than min_reference_rows="
                 f"{policy.min_reference_rows}")
    return DriftSummary(
        verdict="not_enough_data", reference_rows=reference_rows, current_rows=current_rows,
        seconds=time.perf_counter() - started, message=f"Not enough data: {unmet}; no drift test ran.",
    )


# --------------------------------------------------------------------------- drift


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, policy: MonitoringPolicy,
                  columns: list[str] | None = None, prediction_column: str | None = None,
                  logger: logging.Logger | logging.LoggerAdapter | None = None,
                  skipped: dict[str, str] | None = None) -> DriftComputation:
    """Run the drift and data-quality checks of two frames with Evidently; no Prefect needed.

    Steps: check the columns; stop with ``not_enough_data`` if either side is smaller than
    ``policy.min_window_rows``; check data quality on all rows; sample both sides to at most
    ``policy.max_sample_rows`` rows (seeded); run an Evidently ``Report`` with a
    ``DataDriftPreset`` (the policy's per-column methods and thresholds), a ``ValueDrift``
    for the prediction column and quality metrics; read the verdict from its results.

    Args:
        reference: Reference rows (e.g. the champion's training data).
        current: Current rows (e.g. the inference log of a window).
        policy: Thresholds, methods, sizes.
        columns: Feature columns to compare (all reference columns when None).
        prediction_column: Model output column, tested separately.
        logger: Where to log (this module's logger when None).
        skipped: Columns already left out by the caller (:func:`drift_columns`), with the reason;
            recorded in the summary.

    Returns:
        The summary (paths unset), the Evidently snapshot (None without a test) and
        per-column quality figures.

    Raises:
        MonitoringError: If columns are missing, types disagree, or Evidently fails.

    Examples:
        >>> result = compute_drift(reference_df, current_df, MonitoringPolicy())  # doctest: +SKIP
        >>> result.summary.verdict, result.summary.drifted_columns  # doctest: +SKIP
        ('no_drift', ['income'])
    """
    logger = logger or _log
    started = time.perf_counter()
    features = _resolve_columns([str(c) for c in reference.columns], [str(c) for c in current.columns], columns,
                                prediction_column, "reference frame", "current frame")
    skipped = dict(skipped or {})
    ref_rows, cur_rows = len(reference), len(current)
    if _too_small(ref_rows, cur_rows, policy):
        result = DriftComputation(_not_enough(ref_rows, cur_rows, policy, started))
        result.summary.skipped_columns = skipped
        return result

    numerical, categorical, unsupported = _column_kinds(reference, features)
    if unsupported:
        logger.warning("Skipping column(s) %s: drift of their types (%s) is not supported", unsupported,
                       sorted({str(reference[c].dtype) for c in unsupported}))
        skipped.update({c: f"type {reference[c].dtype} is not drift-tested (dates and times are not features)"
                        for c in unsupported})
    identifiers = [c for c in categorical if _identifier_like(reference[c])]
    if identifiers:
        categorical = [c for c in categorical if c not in identifiers]
        skipped.update({c: f"identifier-like: {reference[c].nunique()} distinct values in {ref_rows} reference rows"
                        for c in identifiers})
        if not numerical + categorical:
            raise MonitoringError(f"Every column to compare is identifier-like ({identifiers}): pass columns=[...] "
                                  "naming real features, or record their roles in the data contract.")
    _check_types(reference, current, numerical)
    quality_issues, quality = check_data_quality(reference, current, numerical, categorical, policy)
    empty = {c for c, stats in quality.items()
             if stats["missing_share"] >= 1.0 or stats["reference_missing_share"] >= 1.0}
    drift_cols = [c for c in numerical + categorical if c not in empty]
    if not drift_cols:
        raise MonitoringError(f"No column has values in both windows (empty: {sorted(empty)}); "
                              "check the data or pass other columns=[...].")

    used = drift_cols + ([prediction_column] if prediction_column else [])
    ref_sample, ref_sampled = sample_rows(reference, policy.max_sample_rows, policy.sample_seed, stream=0)
    cur_sample, cur_sampled = sample_rows(current, policy.max_sample_rows, policy.sample_seed, stream=1)
    ref_sample, cur_sample = ref_sample[used].copy(), cur_sample[used].copy()

    pred_categorical = False
    if prediction_column:
        _, pred_cat, pred_bad = _column_kinds(reference, [prediction_column])
        if pred_bad:
            raise MonitoringError(f"Prediction column '{prediction_column}' has unsupported dtype "
                                  f"{reference[prediction_column].dtype}: log labels or scores.")
        pred_categorical = bool(pred_cat)
        if pred_categorical:  # string / bool / integer labels: chi-square on the label counts
            ref_sample[prediction_column], cur_sample[prediction_column] = _text_if_mixed(
                ref_sample[prediction_column], cur_sample[prediction_column])
    snapshot = _run_evidently(ref_sample, cur_sample, drift_cols, categorical, quality, prediction_column,
                              pred_categorical, policy)
    summary = _summarise(snapshot, drift_cols, prediction_column, policy)
    summary.quality_issues = quality_issues
    summary.reference_rows, summary.current_rows = ref_rows, cur_rows
    summary.sampled = ref_sampled or cur_sampled
    summary.skipped_columns = skipped
    summary.seconds = time.perf_counter() - started
    if empty:
        summary.message += f" Not tested (no values): {sorted(empty)}."
    if skipped:
        summary.message += " Not tested (not features): " + "; ".join(f"{c}: {why}" for c, why in skipped.items()) + "."
    if summary.sampled:
        summary.message += (f" Tested on seeded samples of {len(ref_sample)} reference and {len(cur_sample)} "
                            "current rows; quality checks counted all rows.")
    logger.info("Drift verdict %s: %s", summary.verdict, summary.message)
    return DriftComputation(summary=summary, snapshot=snapshot, quality=quality)


def _check_types(reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str]) -> None:
    from pandas.api import types

    wrong = [f"{c} ({current[c].dtype})" for c in numerical
             if not (types.is_numeric_dtype(current[c]) and not types.is_bool_dtype(current[c]))
             and not current[c].isna().all()]
    if wrong:
        raise MonitoringError(f"Column(s) {wrong} are numeric in the reference but not in the current window: "
                              "fix the writer of the current data (e.g. numbers logged as strings).")


def _run_evidently(reference: pd.DataFrame, current: pd.DataFrame, drift_cols: list[str], categorical: list[str],
                   quality: dict[str, dict[str, Any]], prediction_column: str | None, pred_categorical: bool,
                   policy: MonitoringPolicy) -> Any:
    """Build and run the Evidently report on the (sampled) frames."""
    import numpy as np
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MissingValueCount, OutListValueCount, OutRangeValueCount, ValueDrift
    from evidently.presets import DataDriftPreset
    from evidently.tests import lte

    cat_set = set(categorical)
    methods = {c: policy.method_for(c, c in cat_set) for c in drift_cols}
    thresholds = {c: t for c in drift_cols if (t := policy.threshold_for(c)) is not None}
    metrics: list[Any] = [DataDriftPreset(columns=drift_cols, drift_share=policy.drift_share,
                                          per_column_method=methods, per_column_threshold=thresholds or None)]
    if prediction_column:
        metrics.append(ValueDrift(column=prediction_column,
                                  method=policy.method_for(prediction_column, pred_categorical),
                                  threshold=policy.threshold_for(prediction_column)))
    for col in drift_cols:
        stats = quality[col]
        metrics.append(MissingValueCount(column=col, share_tests=[
            lte(round(stats["reference_missing_share"] + policy.missing_share_tolerance, 6))]))
        if col in cat_set:
            values = sorted({_plain(v) for v in reference[col].dropna().unique().tolist()}, key=str)
            if len(values) <= _MAX_LISTED_CATEGORIES and all(isinstance(v, str | int) for v in values):
                metrics.append(OutListValueCount(column=col, values=values,
                                                 share_tests=[lte(policy.new_category_tolerance)]))
        else:
            metrics.append(OutRangeValueCount(column=col, left=stats["reference_min"], right=stats["reference_max"],
                                              share_tests=[lte(policy.out_of_range_tolerance)]))

    pred = [prediction_column] if prediction_column else []
    definition = DataDefinition(
        numerical_columns=[c for c in drift_cols if c not in cat_set] + ([] if pred_categorical else pred),
        categorical_columns=[c for c in drift_cols if c in cat_set] + (pred if pred_categorical else []),
    )
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            return Report(metrics, include_tests=True).run(
                Dataset.from_pandas(current, data_definition=definition),
                Dataset.from_pandas(reference, data_definition=definition),
            )
    except Exception as exc:  # noqa: BLE001 - wrap the SDK error with what was being done
        raise MonitoringError(
            f"Evidently could not compute the drift report for columns {drift_cols + pred} "
            f"(methods {methods}): {exc}. Check that each method in the policy fits its column's type "
            "(e.g. 'ks' / 'wasserstein' for numbers, 'chisquare' / 'jensenshannon' for categories)."
        ) from exc


def _summarise(snapshot: Any, drift_cols: list[str], prediction_column: str | None,
               policy: MonitoringPolicy) -> DriftSummary:
    """Read the verdict out of the Evidently snapshot."""
    report = snapshot.dict()
    failed: dict[str, bool] = {}
    for test in report["tests"]:
        metric_id = (test.get("metric_config") or {}).get("metric_id")
        status = str(test.get("status", "")).upper()
        if metric_id is not None:
            failed[metric_id] = failed.get(metric_id, False) or status.endswith("FAIL")

    scores: dict[str, float] = {}
    methods: dict[str, str] = {}
    thresholds: dict[str, float] = {}
    drifted: dict[str, bool] = {}
    evidently_count: float | None = None
    for metric in report["metrics"]:
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            col = config["column"]
            score, method, threshold = _finite(metric.get("value")), str(config.get("method")), config.get("threshold")
            methods[col] = method
            if threshold is not None:
                thresholds[col] = float(threshold)
            if score is not None:
                scores[col] = score
            if metric["id"] in failed:
                drifted[col] = failed[metric["id"]]
            elif score is not None and threshold is not None:
                drifted[col] = score <= threshold if method in P_VALUE_METHODS else score >= threshold
            else:
                drifted[col] = False
        elif kind.endswith(":DriftedColumnsCount"):
            evidently_count = float((metric.get("value") or {}).get("count", float("nan")))

    drifted_columns = [c for c in drift_cols if drifted.get(c)]
    share = len(drifted_columns) / len(drift_cols)
    if evidently_count is not None and evidently_count != len(drifted_columns):
        _log.warning("Evidently counted %s drifted columns, the per-column results %s", evidently_count,
                     len(drifted_columns))
    dataset_drift = share >= policy.drift_share
    prediction_drift = drifted.get(prediction_column) if prediction_column else None
    message = (f"{len(drifted_columns)} of {len(drift_cols)} columns drifted ({share:.0%}; dataset drift at "
               f">= {policy.drift_share:.0%})" + (f": {', '.join(drifted_columns)}." if drifted_columns else "."))
    if prediction_column:
        message += f" Prediction '{prediction_column}' {'drifted' if prediction_drift else 'stable'}."
    return DriftSummary(
        verdict="drift" if dataset_drift else "no_drift", dataset_drift=dataset_drift, drift_share=share,
        drifted_columns=drifted_columns,
        column_scores={c: scores[c] for c in drift_cols if c in scores},
        column_methods={c: methods[c] for c in drift_cols if c in methods},
        column_thresholds={c: thresholds[c] for c in drift_cols if c in thresholds},
        prediction_drift=prediction_drift,
        prediction_score=scores.get(prediction_column) if prediction_column else None,
        message=message,
    )


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
                      report_name: str, windows: dict[str, str] | None = None) -> DriftSummary:
    """Write ``<report_name>.json`` (always) and ``<report_name>.html`` (when tests ran).

    The JSON holds the summary, the policy, per-column quality figures and Evidently's
    own result dict (``metrics`` and ``tests``).

    Args:
        result: Output of :func:`compute_drift`.
        policy: The policy used (recorded in the JSON).
        output_dir: Folder to write into (created if needed).
        report_name: File stem; letters, digits, ``.``, ``_`` and ``-``.
        windows: Paths of the reference and current windows, recorded in the JSON.

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
        _write_atomic(html_path, result.snapshot.get_html_str(as_iframe=False))
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
    _write_atomic(json_path, json.dumps(_json_safe(document), indent=1, default=_plain, allow_nan=False))
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
                     time_column: str | None = None) -> DriftSummary:
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
    features = _resolve_columns(ref_names, cur_names, candidates, prediction_column, str(ref_file), str(cur_file))
    wanted = features + ([prediction_column] if prediction_column else [])
    windows = {"reference": str(ref_file), "current": str(cur_file)}
    if ref_rows is not None and cur_rows is not None and _too_small(ref_rows, cur_rows, policy):
        result = DriftComputation(_not_enough(ref_rows, cur_rows, policy, started))
        result.summary.skipped_columns = skipped
        logger.info(result.summary.message)
    else:
        reference = read_window(ref_file, wanted, "reference")
        current = read_window(cur_file, wanted, "current")
        logger.info("Comparing %s current rows with %s reference rows on %s columns", len(current),
                    len(reference), len(features))
        result = compute_drift(reference, current, policy, features, prediction_column, logger=logger,
                               skipped=skipped)
        del reference, current
    summary = save_drift_report(result, policy, output_dir, report_name, windows)
    summary.seconds = time.perf_counter() - started
    logger.info("Drift report %s: verdict %s in %.1f s (%s)", report_name, summary.verdict, summary.seconds,
                summary.html_path or summary.json_path)
    return summary


# --------------------------------------------------------------------------- performance
# Performance per task type lives in tasks/monitoring_performance.py; these names stay importable from here.
from tasks.monitoring_performance import (  # noqa: E402
    PerformanceSummary,
    compute_performance,
    evaluate_performance,
)

__all__ = ["DriftComputation", "DriftSummary", "PerformanceSummary", "check_data_quality", "compute_drift",
           "compute_performance", "drift_columns", "evaluate_performance", "read_window", "run_drift_report",
           "sample_rows", "save_drift_report", "window_schema"]
