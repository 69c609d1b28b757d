"""Model performance on labelled traffic, per task type, versus the champion's test metrics.

A window of the inference log whose ground truth arrived (``label``) is scored with the
metric names of :mod:`blocks.task_metrics`:

- ``binary``: ``roc_auc`` and ``log_loss`` (from ``score``, the probability of the positive
  label), ``accuracy``, ``f1``, ``precision``, ``recall`` (of the positive label);
- ``multiclass``: ``f1_macro``, ``accuracy``, ``precision_macro``, ``recall_macro``, and
  ``roc_auc_ovr`` / ``log_loss`` when a ``probabilities`` column (JSON ``{"<label>": p}`` per
  row) was logged;
- ``regression``: ``rmse``, ``mae``, ``r2``.

Class labels are compared as text (``str`` of the JSON-native label, so ``1``, ``1.0`` and ``"1"``
are one class): the label that arrives later may have another type than the logged prediction.

Decay rule (see :class:`blocks.monitoring_policy.MonitoringPolicy`): for a metric where larger is
better, an absolute drop of more than ``policy.performance_decay``; for an error metric
(``rmse``, ``mae``, ``log_loss``), a relative increase of more than ``policy.performance_decay``.
The metrics are scikit-learn's; heavy imports stay inside the functions.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.monitoring_policy import MonitoringPolicy
from blocks.task_metrics import TASK_TYPES, plain_label
from blocks.task_metrics import positive_label as default_positive_label
from tasks.exceptions import MonitoringError
from tasks.logs import run_logger
from tasks.monitoring_windows import read_window, window_schema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: Metrics that need the positive-label score (binary) or the per-class probabilities (multiclass).
_NEEDS_SCORES = {"binary": {"roc_auc", "log_loss"}, "multiclass": {"roc_auc_ovr", "log_loss"}}


class PerformanceSummary(BaseModel):
    """Model performance on the labelled rows of a window versus the champion's baseline."""

    verdict: Literal["decayed", "ok", "not_enough_data"]
    decayed: bool = False
    task_type: str = "binary"
    primary_metric: str
    current_value: float | None = None
    baseline_value: float | None = None
    drop: float | None = Field(None, description="How much worse than the baseline, in the rule's unit (positive = "
                                                 "worse): absolute drop, or relative increase for error metrics.")
    decay_rule: str = Field("", description="'absolute drop' or 'relative increase'.")
    metrics: dict[str, float] = Field(default_factory=dict)
    labeled_rows: int = 0
    total_rows: int = 0
    seconds: float = 0.0
    message: str = ""


def as_text(values: Any) -> np.ndarray:
    """Return class labels as text (``1``, ``1.0``, ``np.int64(1)`` and ``"1"`` all become ``"1"``).

    Vectorised for the common dtypes (1M labels in ~0.1 s); mixed object columns go value by value.
    """
    import numpy as np
    import pandas as pd

    series = pd.Series(values).reset_index(drop=True)
    types = pd.api.types
    if types.is_bool_dtype(series) or types.is_integer_dtype(series):
        return series.astype(str).to_numpy(dtype=object)
    if types.is_float_dtype(series) and np.all(np.mod(series.to_numpy(dtype="float64"), 1) == 0):
        return series.astype("int64").astype(str).to_numpy(dtype=object)
    if types.is_string_dtype(series) and series.map(type).eq(str).all():
        return series.to_numpy(dtype=object)
    return np.array([str(plain_label(v)) for v in series], dtype=object)


def _codes(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Integer codes of text labels: scikit-learn sorts object arrays in Python, about 30x slower than ints."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(np.concatenate([y_true, y_pred]))
    return codes[: len(y_true)], codes[len(y_true):], [str(u) for u in uniques]


def _parse_probabilities(values: pd.Series, classes: list[str]) -> np.ndarray | None:
    """Per-class probability matrix (columns in ``classes`` order) from JSON text or dicts; None if any is missing."""
    import pandas as pd

    try:  # orjson parses ~5x faster than json (1M rows: seconds, not tens of seconds); json if it is missing
        from orjson import loads
    except ImportError:  # pragma: no cover
        loads = json.loads
    records = []
    for value in values:
        if isinstance(value, str | bytes):
            try:
                value = loads(value)
            except ValueError:
                return None
        if not isinstance(value, Mapping):
            return None
        records.append(value)
    table = pd.DataFrame.from_records(records)
    table.columns = [str(c) for c in table.columns]
    return table.reindex(columns=classes).apply(pd.to_numeric, errors="coerce").fillna(0.0).to_numpy("float64")


def _binary_metrics(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None, positive: str
                    ) -> tuple[dict[str, float], dict[str, str]]:
    import numpy as np
    from sklearn import metrics as skm

    truth, predicted = y_true == positive, y_pred == positive
    true_codes, pred_codes, _ = _codes(y_true, y_pred)
    values = {"accuracy": float(skm.accuracy_score(true_codes, pred_codes)),
              "f1": float(skm.f1_score(truth, predicted, zero_division=0)),
              "precision": float(skm.precision_score(truth, predicted, zero_division=0)),
              "recall": float(skm.recall_score(truth, predicted, zero_division=0))}
    why: dict[str, str] = {}
    if scores is None:
        why["roc_auc"] = why["log_loss"] = "no score column was given"
    elif not np.isfinite(scores).all():
        why["roc_auc"] = why["log_loss"] = f"{int((~np.isfinite(scores)).sum())} labelled rows have no score"
    elif truth.all() or not truth.any():
        why["roc_auc"] = f"the labelled rows hold one class only ({y_true[0]!r}; positive label {positive!r})"
        values["log_loss"] = float(skm.log_loss(truth, np.clip(scores, 1e-15, 1 - 1e-15), labels=[False, True]))
    else:
        values["roc_auc"] = float(skm.roc_auc_score(truth, scores))
        values["log_loss"] = float(skm.log_loss(truth, np.clip(scores, 1e-15, 1 - 1e-15), labels=[False, True]))
    return values, why


def _multiclass_metrics(y_true: np.ndarray, y_pred: np.ndarray, probabilities: pd.Series | None,
                        classes: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    import numpy as np
    from sklearn import metrics as skm

    average = {"average": "macro", "zero_division": 0}
    true_codes, pred_codes, uniques = _codes(y_true, y_pred)
    values = {"accuracy": float(skm.accuracy_score(true_codes, pred_codes)),
              "f1_macro": float(skm.f1_score(true_codes, pred_codes, **average)),
              "precision_macro": float(skm.precision_score(true_codes, pred_codes, **average)),
              "recall_macro": float(skm.recall_score(true_codes, pred_codes, **average))}
    why: dict[str, str] = {}
    matrix = _parse_probabilities(probabilities, classes) if probabilities is not None and classes else None
    present = [uniques[c] for c in np.unique(true_codes)]
    unknown = sorted(set(present) - set(classes))
    if probabilities is None:
        why["roc_auc_ovr"] = why["log_loss"] = "no 'probabilities' column was logged"
    elif not classes:
        why["roc_auc_ovr"] = why["log_loss"] = "the class list is unknown (no mlops.classes tag, no probabilities)"
    elif matrix is None:
        why["roc_auc_ovr"] = why["log_loss"] = "some labelled rows have no per-class probabilities"
    elif unknown:
        why["roc_auc_ovr"] = why["log_loss"] = f"labels {unknown[:5]} are not among the model's classes {classes}"
    else:
        matrix = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1e-15, None)
        index = {c: i for i, c in enumerate(classes)}
        true_index = np.array([index.get(u, -1) for u in uniques])[true_codes]  # every label is a class (checked)
        values["log_loss"] = float(skm.log_loss(true_index, np.clip(matrix, 1e-15, 1.0),
                                                labels=list(range(len(classes)))))
        if len(present) < 2:
            why["roc_auc_ovr"] = f"the labelled rows hold one class only ({present[0]!r})"
        else:
            # One-vs-rest AUC averaged over the classes present in the labels (sklearn's "ovr" needs every
            # class in y_true, which a short window rarely has); a class absent from the window has no AUC.
            aucs = [skm.roc_auc_score(true_index == index[c], matrix[:, index[c]]) for c in present]
            values["roc_auc_ovr"] = float(np.mean(aucs))
    return values, why


def _regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[dict[str, float], dict[str, str]]:
    from sklearn import metrics as skm

    values = {"rmse": float(math.sqrt(skm.mean_squared_error(y_true, y_pred))),
              "mae": float(skm.mean_absolute_error(y_true, y_pred))}
    why: dict[str, str] = {}
    if len(y_true) < 2 or float(y_true.std()) == 0.0:
        why["r2"] = "the labelled targets do not vary"
    else:
        values["r2"] = float(skm.r2_score(y_true, y_pred))
    return values, why


def _numbers(series: pd.Series, column: str) -> np.ndarray:
    import pandas as pd

    parsed = pd.to_numeric(series, errors="coerce")
    bad = series[parsed.isna()]
    if len(bad):
        raise MonitoringError(f"Column '{column}' of a regression window holds {len(bad)} value(s) that are not "
                              f"numbers, e.g. {[plain_label(v) for v in bad.head(5).tolist()]}: log numeric "
                              "predictions and attach numeric ground truth.")
    return parsed.to_numpy(dtype="float64")


def _decay(metric: str, current: float, baseline: float, policy: MonitoringPolicy) -> tuple[float, bool, str, str]:
    """(worsening in the rule's unit, decayed?, rule name, readable comparison)."""
    if policy.lower_is_better(metric):
        if baseline != 0:
            change = (current - baseline) / abs(baseline)
        else:
            change = math.inf if current > 0 else 0.0
        text = (f"{metric} {current:.4g} vs baseline {baseline:.4g} ({change:+.1%} relative; decayed above "
                f"+{policy.performance_decay:.1%})")
        return change, change > policy.performance_decay, "relative increase", text
    drop = baseline - current
    text = (f"{metric} {current:.4f} vs baseline {baseline:.4f} (drop {drop:+.4f}; decayed above "
            f"{policy.performance_decay:.4f})")
    return drop, drop > policy.performance_decay, "absolute drop", text


def compute_performance(frame: pd.DataFrame, label_column: str, prediction_column: str, score_column: str | None,
                        baseline_metrics: dict[str, float], policy: MonitoringPolicy, task_type: str = "binary",
                        classes: list[Any] | None = None, positive_label: Any = None,
                        probabilities_column: str | None = None) -> PerformanceSummary:
    """Score the labelled rows of a window for the model's task type; compare with the champion's baseline.

    The primary metric is ``policy.metric_for(task_type)``; it is refused (MonitoringError) before any
    work when the task type cannot report it, when the baseline lacks it, or when the columns it needs
    are not given. Rows without a label (not arrived yet) are skipped; with fewer than
    ``policy.min_labeled_rows`` labelled rows the verdict is ``not_enough_data`` and the message says
    how many of how many rows are labelled.

    Args:
        frame: Rows with predictions; the label may be missing on some.
        label_column: Ground-truth column.
        prediction_column: Predicted label (or number, for regression) column.
        score_column: Binary only: the positive label's probability, needed for ``roc_auc`` / ``log_loss``.
        baseline_metrics: The champion's test metrics (names without the ``test_`` prefix).
        policy: Primary metric, allowed decay, minimum labelled rows.
        task_type: ``binary``, ``multiclass`` or ``regression`` (the ``mlops.task_type`` tag).
        classes: The training label set (``mlops.classes``): positive label of a binary task when
            ``positive_label`` is None, class order of the probabilities.
        positive_label: The binary positive label (``mlops.positive_label``).
        probabilities_column: Multiclass: column of JSON per-class probabilities (used when present).

    Returns:
        The :class:`PerformanceSummary`.

    Raises:
        MonitoringError: If the metric does not fit the task type, the baseline lacks it, a column is
            missing, or regression values are not numbers.

    Examples:
        >>> compute_performance(df, "label", "prediction", None, {"f1_macro": 0.93}, MonitoringPolicy(),
        ...                     task_type="multiclass")  # doctest: +SKIP
    """
    import numpy as np

    started = time.perf_counter()
    if task_type not in TASK_TYPES:
        raise MonitoringError(f"Unknown task type {task_type!r}: the champion's mlops.task_type tag must be one of "
                              f"{list(TASK_TYPES)}.")
    try:
        primary = policy.metric_for(task_type)
    except ValueError as exc:
        raise MonitoringError(f"{exc} Fix the monitoring policy (or leave primary_metric empty for the default)."
                              ) from exc
    needed = [label_column, prediction_column] + ([score_column] if score_column else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise MonitoringError(f"Performance window lacks column(s) {missing} (has {list(frame.columns)[:20]}): "
                              "join the ground-truth labels to the inference log, or pass the right column names.")
    if primary not in baseline_metrics:
        raise MonitoringError(f"baseline_metrics has no '{primary}' (keys: {sorted(baseline_metrics)}): pass the "
                              "champion's test metrics, or set the policy's primary_metric to one of them.")
    if task_type == "binary" and primary in _NEEDS_SCORES["binary"] and not score_column:
        raise MonitoringError(f"primary_metric '{primary}' needs score_column (the positive label's probability); "
                              "pass it, or choose another primary_metric in the policy.")
    has_probabilities = bool(probabilities_column) and probabilities_column in frame.columns
    if task_type == "multiclass" and primary in _NEEDS_SCORES["multiclass"] and not has_probabilities:
        raise MonitoringError(f"primary_metric '{primary}' needs the per-class probabilities column "
                              f"'{probabilities_column or 'probabilities'}', which the window lacks; log it, or "
                              "choose another primary_metric (e.g. f1_macro).")
    baseline = float(baseline_metrics[primary])
    labeled = frame.loc[frame[label_column].notna() & frame[prediction_column].notna()]
    n, total = len(labeled), len(frame)
    base = {"task_type": task_type, "primary_metric": primary, "baseline_value": baseline, "labeled_rows": n,
            "total_rows": total}
    if n < policy.min_labeled_rows:
        share = f"all {n} rows are labelled" if n == total else f"{n} of {total} rows are labelled"
        return PerformanceSummary(verdict="not_enough_data", seconds=time.perf_counter() - started, **base,
                                  message=f"Not enough labelled data: {share}, fewer than min_labeled_rows="
                                          f"{policy.min_labeled_rows}; no performance verdict.")

    class_text = [str(plain_label(c)) for c in classes] if classes else []
    if task_type == "regression":
        values, why = _regression_metrics(_numbers(labeled[label_column], label_column),
                                          _numbers(labeled[prediction_column], prediction_column))
    elif task_type == "binary":
        y_true, y_pred = as_text(labeled[label_column]), as_text(labeled[prediction_column])
        if positive_label is not None:
            positive = str(plain_label(positive_label))
        elif len(class_text) == 2:
            positive = str(plain_label(default_positive_label(list(classes or []))))
        else:
            observed = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
            positive = str(default_positive_label(observed)) if len(observed) == 2 else observed[-1]
        scores = labeled[score_column].to_numpy(dtype="float64", na_value=np.nan) if score_column else None
        values, why = _binary_metrics(y_true, y_pred, scores, positive)
    else:
        y_true, y_pred = as_text(labeled[label_column]), as_text(labeled[prediction_column])
        probabilities = labeled[probabilities_column] if has_probabilities else None
        if not class_text and probabilities is not None:
            first = next((v for v in probabilities if isinstance(v, str | Mapping)), None)
            keys = json.loads(first) if isinstance(first, str) else first
            class_text = sorted(str(k) for k in keys) if isinstance(keys, Mapping) else []
        values, why = _multiclass_metrics(y_true, y_pred, probabilities, class_text)

    if primary not in values:
        return PerformanceSummary(verdict="not_enough_data", metrics=values, seconds=time.perf_counter() - started,
                                  **base, message=f"'{primary}' is undefined on the {n} labelled rows: "
                                                  f"{why.get(primary, 'not computable')}; no performance verdict.")
    current = values[primary]
    drop, decayed, rule, text = _decay(primary, current, baseline, policy)
    return PerformanceSummary(
        verdict="decayed" if decayed else "ok", decayed=decayed, current_value=current, drop=drop, decay_rule=rule,
        metrics=values, seconds=time.perf_counter() - started, **base,
        message=f"{text} on {n} labelled rows of {total}: {'decayed' if decayed else 'ok'}.",
    )


@task(name="evaluate-performance", cache_policy=NO_CACHE)
def evaluate_performance(current_with_labels_path: str, label_column: str, prediction_column: str,
                         score_column: str | None, baseline_metrics: dict[str, float],
                         policy: MonitoringPolicy, task_type: str = "binary", classes: list[Any] | None = None,
                         positive_label: Any = None, probabilities_column: str | None = "probabilities"
                         ) -> PerformanceSummary:
    """Measure the model on a window whose labels arrived; flag decay against the champion.

    Args:
        current_with_labels_path: Parquet or CSV with labels, predictions and (optionally) scores.
        label_column: Ground-truth column (rows without a label are skipped).
        prediction_column: Predicted label (or number) column.
        score_column: Binary: the positive label's probability (``roc_auc``, ``log_loss``); None otherwise.
        baseline_metrics: The champion's test metrics (e.g. from its ``mlops.test_metrics`` tag).
        policy: The monitoring policy block.
        task_type: ``binary``, ``multiclass`` or ``regression``.
        classes: The training label set (the ``mlops.classes`` tag).
        positive_label: The binary positive label (the ``mlops.positive_label`` tag).
        probabilities_column: Multiclass per-class probabilities (JSON), read when the file has it.

    Returns:
        The :class:`PerformanceSummary`; decay is a result, not an error.

    Raises:
        MonitoringError: If the file or a column is missing, or the metric does not fit the task or baseline.

    Examples:
        >>> from prefect import flow
        >>> from blocks.monitoring_policy import MonitoringPolicy
        >>> @flow
        ... def check() -> PerformanceSummary:
        ...     policy = MonitoringPolicy.load("default-monitoring")
        ...     return evaluate_performance("logs/labelled.parquet", "label", "prediction", None,
        ...                                 {"rmse": 52.1, "mae": 43.0, "r2": 0.45}, policy, task_type="regression")
    """
    logger = run_logger()
    started = time.perf_counter()
    path = Path(current_with_labels_path)
    names, _ = window_schema(path, "labelled")
    wanted = [c for c in dict.fromkeys([label_column, prediction_column, score_column]) if c]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise MonitoringError(f"Labelled window {path} lacks column(s) {missing} (has {names[:20]}): join the "
                              "ground-truth labels to the inference log, or pass the right column names.")
    if probabilities_column and probabilities_column in names and task_type == "multiclass":
        wanted.append(probabilities_column)
    summary = compute_performance(read_window(path, wanted, "labelled"), label_column, prediction_column,
                                  score_column, baseline_metrics, policy, task_type=task_type, classes=classes,
                                  positive_label=positive_label, probabilities_column=probabilities_column)
    summary.seconds = time.perf_counter() - started
    logger.info("Performance %s: %s", summary.verdict, summary.message)
    return summary
