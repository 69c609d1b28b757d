"""Data drift with Evidently 0.7: the pure computation behind the ``run-drift-report`` task.

:func:`compute_drift` takes two frames and a :class:`~blocks.monitoring_policy.MonitoringPolicy`
and needs no Prefect, so benchmarks and notebooks call it directly; the task in
:mod:`tasks.evidently_monitoring` reads the window files, calls it and writes the reports.

Scale: a window larger than ``policy.max_sample_rows`` is sampled (seeded, so the same data
gives the same verdict) before the drift tests run, so a 1,000,000-row window costs about as
much as a 50,000-row one (``benchmarks/bench_drift.py`` measures it). Data-quality checks
(:mod:`tasks.monitoring_quality`) are cheap and always count every row.

This is the only module that imports Evidently, inside :func:`compute_drift`'s helpers, so
importing it stays fast.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from blocks.monitoring_policy import P_VALUE_METHODS, MonitoringPolicy
from blocks.task_metrics import plain_label
from tasks.exceptions import MonitoringError
from tasks.monitoring_quality import (
    check_data_quality,
    check_numeric_types,
    column_kinds,
    identifier_like,
    json_scalar,
)
from tasks.monitoring_windows import resolve_columns, sample_rows

if TYPE_CHECKING:
    import pandas as pd

_log = logging.getLogger(__name__)

#: Categorical columns with more reference categories than this get no out-of-list metric in the
#: Evidently report (the list would bloat it); the summary still counts unseen categories.
_MAX_LISTED_CATEGORIES = 100


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
    prediction_column: str | None = None
    prediction_method: str | None = None
    prediction_threshold: float | None = None
    column_effects: dict[str, float | None] = Field(
        default_factory=dict, description="Column (and prediction) -> effect size (PSI, tasks.monitoring_effects).")
    prediction_shares: list[dict[str, Any]] = Field(
        default_factory=list, description="Prediction value (or bin) -> reference and current share.")
    drift_share_threshold: float = Field(0.5, description="policy.drift_share used for the dataset verdict.")
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


def not_enough_data(reference_rows: int, current_rows: int, policy: MonitoringPolicy, started: float,
                    skipped: dict[str, str] | None = None) -> DriftComputation | None:
    """Return the ``not_enough_data`` result when either side is below its minimum, else None.

    The minimum is ``policy.min_window_rows`` for the current window and ``policy.min_reference_rows``
    for the reference; the message names the one that is unmet.

    Examples:
        >>> not_enough_data(5000, 150, MonitoringPolicy(), 0.0).summary.verdict
        'not_enough_data'
        >>> not_enough_data(5000, 5000, MonitoringPolicy(), 0.0) is None
        True
    """
    if current_rows < policy.min_window_rows:
        unmet = f"the current window has {current_rows} rows, fewer than min_window_rows={policy.min_window_rows}"
    elif reference_rows < policy.min_reference_rows:
        unmet = (f"the reference has {reference_rows} rows, fewer than min_reference_rows="
                 f"{policy.min_reference_rows}")
    else:
        return None
    return DriftComputation(DriftSummary(
        verdict="not_enough_data", reference_rows=reference_rows, current_rows=current_rows,
        seconds=time.perf_counter() - started, message=f"Not enough data: {unmet}; no drift test ran.",
        skipped_columns=dict(skipped or {}),
    ))


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, policy: MonitoringPolicy,
                  columns: list[str] | None = None, prediction_column: str | None = None,
                  logger: logging.Logger | logging.LoggerAdapter | None = None,
                  skipped: dict[str, str] | None = None, current_rows: int | None = None,
                  current_quality: tuple[list[str], dict[str, dict[str, Any]]] | None = None) -> DriftComputation:
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
        skipped: Columns already left out by the caller (:func:`tasks.evidently_monitoring.drift_columns`),
            with the reason; recorded in the summary.
        current_rows: With ``current`` already a sample of a larger window: the window's row count.
        current_quality: With that sample: the quality issues and figures counted over all its rows
            (:func:`tasks.monitoring_stream.read_window_by_column`).

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
    features = resolve_columns([str(c) for c in reference.columns], [str(c) for c in current.columns], columns,
                                prediction_column, "reference frame", "current frame")
    skipped = dict(skipped or {})
    ref_rows, cur_rows = len(reference), current_rows or len(current)
    if (small := not_enough_data(ref_rows, cur_rows, policy, started, skipped)) is not None:
        return small

    numerical, categorical = drift_kinds(reference, features, skipped, logger)
    if current_quality is None:
        check_numeric_types(current, numerical)
        quality_issues, quality = check_data_quality(reference, current, numerical, categorical, policy)
    else:  # counted over all rows by the caller (a window read column by column)
        quality_issues, quality = current_quality
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
        _, pred_cat, pred_bad = column_kinds(reference, [prediction_column])
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
    _add_effects(summary, ref_sample, cur_sample, drift_cols, cat_cols=set(categorical), prediction_column=
                 prediction_column, pred_categorical=pred_categorical)
    summary.quality_issues = quality_issues
    summary.reference_rows, summary.current_rows = ref_rows, cur_rows
    summary.sampled = ref_sampled or cur_sampled or cur_rows > len(cur_sample)
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


def drift_kinds(reference: pd.DataFrame, features: list[str], skipped: dict[str, str],
                logger: logging.Logger | logging.LoggerAdapter | None = None) -> tuple[list[str], list[str]]:
    """Split features into numerical and categorical drift columns; record the others in ``skipped``.

    Columns of unsupported types (dates, times) and identifier-like text columns are left out, with the
    reason. Raises MonitoringError when nothing is left to test.

    Examples:
        >>> import pandas as pd
        >>> drift_kinds(pd.DataFrame({"x": [1.5, 2.5], "c": ["a", "b"]}), ["x", "c"], {})
        (['x'], ['c'])
    """
    logger = logger or _log
    numerical, categorical, unsupported = column_kinds(reference, features)
    if unsupported:
        logger.warning("Skipping column(s) %s: drift of their types (%s) is not supported", unsupported,
                       sorted({str(reference[c].dtype) for c in unsupported}))
        skipped.update({c: f"type {reference[c].dtype} is not drift-tested (dates and times are not features)"
                        for c in unsupported})
    identifiers = [c for c in categorical if identifier_like(reference[c])]
    if identifiers:
        categorical = [c for c in categorical if c not in identifiers]
        skipped.update({c: f"identifier-like: {reference[c].nunique()} distinct values in {len(reference)} "
                           "reference rows" for c in identifiers})
        if not numerical + categorical:
            raise MonitoringError(f"Every column to compare is identifier-like ({identifiers}): pass columns=[...] "
                                  "naming real features, or record their roles in the data contract.")
    return numerical, categorical


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
            values = sorted({json_scalar(v) for v in reference[col].dropna().unique().tolist()}, key=str)
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
        prediction_column=prediction_column, prediction_method=methods.get(prediction_column or ""),
        prediction_threshold=thresholds.get(prediction_column or ""), drift_share_threshold=policy.drift_share,
        message=message,
    )


def _add_effects(summary: DriftSummary, reference: pd.DataFrame, current: pd.DataFrame, drift_cols: list[str],
                 cat_cols: set[str], prediction_column: str | None, pred_categorical: bool) -> None:
    """Add the effect size (PSI) of every tested column and the prediction, and the prediction's shares."""
    from tasks.monitoring_effects import psi, value_shares

    summary.column_effects = {c: psi(reference[c], current[c], c in cat_cols) for c in drift_cols}
    if prediction_column:
        ref, cur = reference[prediction_column], current[prediction_column]
        summary.column_effects[prediction_column] = psi(ref, cur, pred_categorical)
        summary.prediction_shares = value_shares(ref, cur, pred_categorical)


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
        return series.map(lambda v: None if v is None or v != v else str(plain_label(v))).astype(object)

    return text(reference), text(current)
