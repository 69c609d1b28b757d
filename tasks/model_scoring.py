"""Score predictions per task type: metrics against the training label set, class probabilities, fairness.

Metric names come from :mod:`blocks.task_metrics`. Classification metrics are computed against the
label set of the *training* data, never against the classes that happen to be present in one slice,
so a validation slice or a test slice holding two of three classes keeps the same averaging and
does not crash. A metric that is undefined on the data at hand (ROC AUC with one class present, R²
of one row) is left out rather than guessed; the gate then rejects a rule that needs it.

Examples:
    >>> score_predictions("binary", ["no", "yes", "yes"], ["no", "yes", "no"], classes=["no", "yes"],
    ...                   positive="yes")["recall"]
    0.5
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from blocks.task_metrics import FAIRNESS_METRICS, class_labels, plain_label, positive_label

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def matches(values: Any, label: Any) -> np.ndarray:
    """Return a boolean array: which values equal ``label`` (any label type; never a scalar)."""
    import numpy as np
    import pandas as pd

    return pd.Series(np.asarray(values, dtype=object)).eq(label).to_numpy(dtype=bool)


def _finite(out: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def _resolve_classes(task_type: str, y_true: Any, y_pred: Any, classes: list[Any] | None) -> tuple[str, list[Any]]:
    import pandas as pd

    if classes is None:  # legacy callers: the labels seen in truth and predictions
        classes = class_labels(pd.concat([pd.Series(list(y_true)), pd.Series(list(y_pred))], ignore_index=True))
    if task_type == "classification":  # legacy name: binary or multiclass by the label set
        task_type = "binary" if len(classes) <= 2 else "multiclass"
    return task_type, list(classes)


def score_predictions(task_type: str, y_true: Any, y_pred: Any, proba: Any | None = None,
                      classes: list[Any] | None = None, positive: Any | None = None) -> dict[str, float]:
    """Compute the metrics of a task type (names as in :mod:`blocks.task_metrics`).

    Args:
        task_type: ``binary``, ``multiclass``, ``regression`` (``classification`` still accepted).
        y_true: True labels or values.
        y_pred: Predictions.
        proba: Class probabilities: an ``(n, len(classes))`` matrix in the order of ``classes``, or
            (binary) a 1-D array of the positive class's probability.
        classes: The training label set (sorted as :func:`blocks.task_metrics.class_labels` sorts it).
        positive: The positive label of a binary task (default: :func:`positive_label` of ``classes``).

    Returns:
        Metric name -> value; metrics undefined on this data are left out.
    """
    import numpy as np
    from sklearn import metrics as m

    if len(y_true) == 0:
        return {}
    if task_type == "regression":
        y, p = np.asarray(y_true, dtype="float64"), np.asarray(y_pred, dtype="float64")
        return _finite({"rmse": np.sqrt(m.mean_squared_error(y, p)), "mae": m.mean_absolute_error(y, p),
                        "r2": m.r2_score(y, p) if len(y) >= 2 else None})
    task_type, classes = _resolve_classes(task_type, y_true, y_pred, classes)
    y_text = np.asarray([str(plain_label(v)) for v in y_true], dtype=object)
    p_text = np.asarray([str(plain_label(v)) for v in y_pred], dtype=object)
    out: dict[str, float | None] = {"accuracy": float(np.mean(y_text == p_text))}
    if task_type == "binary":
        pos = positive if positive is not None else positive_label(classes)
        t, p = matches(y_true, pos), matches(y_pred, pos)
        out.update(f1=m.f1_score(t, p, zero_division=0), precision=m.precision_score(t, p, zero_division=0),
                   recall=m.recall_score(t, p, zero_division=0))
        if proba is not None:
            proba = np.asarray(proba, dtype="float64")
            score = proba if proba.ndim == 1 else proba[:, [plain_label(c) for c in classes].index(pos)]
            score = np.clip(score, 1e-15, 1 - 1e-15)
            if t.any() and not t.all():
                out["roc_auc"] = m.roc_auc_score(t, score)
            out["log_loss"] = m.log_loss(t, score, labels=[False, True])
        return _finite(out)
    # Multiclass: macro averages over the training label set. A class absent from both truth and
    # predictions of this slice is undefined (NaN, left out of the mean as scikit-learn does with
    # zero_division=nan); the averaging itself never depends on the slice.
    labels = np.asarray([str(c) for c in classes], dtype=object)
    for name, fn in (("f1_macro", m.f1_score), ("precision_macro", m.precision_score),
                     ("recall_macro", m.recall_score)):
        out[name] = fn(y_text, p_text, labels=labels, average="macro", zero_division=np.nan)
    if proba is not None:
        proba = np.asarray(proba, dtype="float64")
        known = np.isin(y_text, labels)
        if known.all():
            out["log_loss"] = m.log_loss(y_text, np.clip(proba, 1e-15, 1.0), labels=labels)
        aucs = [m.roc_auc_score(y_text == label, proba[:, i]) for i, label in enumerate(labels)
                if (y_text == label).any() and not (y_text == label).all()]
        out["roc_auc_ovr"] = float(np.mean(aucs)) if aucs else None
    return _finite(out)


def class_probabilities(model: Any, features: Any, classes: list[Any]) -> np.ndarray | None:
    """Return ``predict_proba`` as an ``(n, len(classes))`` matrix in the order of ``classes``, or None.

    Columns of classes the model never saw in training are 0.

    Args:
        model: A fitted classifier or pipeline.
        features: Its input frame.
        classes: The training label set.

    Returns:
        The probability matrix, or None when the model has no probabilities.
    """
    import numpy as np

    if not hasattr(model, "predict_proba"):
        return None
    try:
        proba = np.asarray(model.predict_proba(features), dtype="float64")
    except (AttributeError, NotImplementedError):
        return None
    model_classes = [str(plain_label(c)) for c in getattr(model, "classes_", classes)]
    out = np.zeros((proba.shape[0], len(classes)))
    for i, label in enumerate(classes):
        if str(label) in model_classes:
            out[:, i] = proba[:, model_classes.index(str(label))]
    return out


def positive_scores(model: Any, features: Any, positive: Any | None = None) -> np.ndarray | None:
    """Return the positive-class probability of a binary classifier, or None.

    Args:
        model: A fitted classifier.
        features: Its input frame.
        positive: The positive label (default: the model's second class, ``classes_[1]``).

    Returns:
        One probability per row, or None for a model without probabilities or with more than two classes.
    """
    classes = [plain_label(c) for c in getattr(model, "classes_", [])]
    if len(classes) != 2:
        return None
    proba = class_probabilities(model, features, classes)
    if proba is None:
        return None
    pos = positive if positive is not None else classes[1]
    return proba[:, [str(c) for c in classes].index(str(pos))] if str(pos) in map(str, classes) else None


def _fairlearn_metric(name: str) -> Any:
    import fairlearn.metrics as fm

    if name not in FAIRNESS_METRICS:
        raise ValueError(f"Unknown fairness metric {name!r}: use one of {list(FAIRNESS_METRICS)}.")
    return getattr(fm, name)


def fairness_report(task_type: str, y_true: Any, y_pred: Any, sensitive: Any, metric: str | None = None,
                    classes: list[Any] | None = None, positive: Any | None = None,
                    error_metric: str = "rmse") -> dict[str, Any]:
    """Measure the disparity of predictions between the groups of a sensitive attribute, with fairlearn.

    Binary: fairlearn's ``metric`` with the positive label as the favourable outcome. Multiclass: the
    same metric one-vs-rest for each class; the disparity is the worst class's. Regression: the largest
    gap of ``error_metric`` between groups (fairlearn ``MetricFrame.difference``).

    Args:
        task_type: ``binary``, ``multiclass`` or ``regression``.
        y_true: True labels or values.
        y_pred: Predictions.
        sensitive: The sensitive attribute, one value per row (missing values form their own group).
        metric: ``demographic_parity_difference`` (default), ``equalized_odds_difference`` or
            ``equal_opportunity_difference`` (classification only).
        classes: The training label set.
        positive: The positive label of a binary task.
        error_metric: The metric whose group gap is the disparity of a regressor (``rmse``, ``mae``, ``r2``).

    Returns:
        ``{"metric", "disparity", "groups": {group: {...}}, "per_class": {...}}`` (JSON-able).
    """
    import numpy as np
    import pandas as pd
    from fairlearn.metrics import MetricFrame, count, selection_rate

    groups = pd.Series(np.asarray(sensitive, dtype=object)).astype(str).to_numpy()
    if task_type == "regression":
        def error(y: Any, p: Any) -> float:
            return score_predictions("regression", y, p).get(error_metric, float("nan"))

        frame = MetricFrame(metrics={error_metric: error, "rows": count}, y_true=np.asarray(y_true, dtype="float64"),
                            y_pred=np.asarray(y_pred, dtype="float64"), sensitive_features=groups)
        table = frame.by_group
        return {"metric": f"{error_metric}_group_gap", "disparity": float(frame.difference()[error_metric]),
                "groups": {str(g): {k: float(v) for k, v in row.items()} for g, row in table.iterrows()},
                "per_class": {}}
    name = metric or "demographic_parity_difference"
    fn = _fairlearn_metric(name)
    task_type, classes = _resolve_classes(task_type, y_true, y_pred, classes)
    if task_type == "binary":
        targets = [positive if positive is not None else positive_label(classes)]
    else:
        targets = list(classes)
    per_class: dict[str, float] = {}
    group_rows: dict[str, dict[str, float]] = {}
    for label in targets:
        t, p = matches(y_true, label), matches(y_pred, label)
        per_class[str(label)] = float(fn(t, p, sensitive_features=groups))
        frame = MetricFrame(metrics={"selection_rate": selection_rate, "rows": count}, y_true=t, y_pred=p,
                            sensitive_features=groups)
        for group, row in frame.by_group.iterrows():
            entry = group_rows.setdefault(str(group), {"rows": float(row["rows"])})
            entry[f"selection_rate[{label}]"] = float(row["selection_rate"])
    values = [v for v in per_class.values() if math.isfinite(v)]
    disparity = max(values) if len(values) == len(per_class) else float("nan")
    return {"metric": name if task_type == "binary" else f"{name} (one-vs-rest, worst class)",
            "disparity": disparity, "groups": group_rows, "per_class": per_class}


def baseline_metrics(task_type: str, y_train: Any, y_test: Any, classes: list[Any] | None = None,
                     positive: Any | None = None) -> tuple[str, dict[str, float]]:
    """Score the simplest model on the test labels: the class prior or the mean, fitted on the training labels.

    The gate's "a simpler model is not better" rule (ML Test Score, Model 5): a challenger must beat
    this baseline on the primary metric. The baseline sees no features: it predicts the most frequent
    class with the training prior as its probabilities (``DummyClassifier(strategy="prior")``), or the
    training mean (``DummyRegressor(strategy="mean")``).

    Args:
        task_type: ``binary``, ``multiclass`` or ``regression``.
        y_train: Labels the baseline is fitted on (the training split's).
        y_test: Labels it is scored on (the test split's).
        classes: The training label set (classification).
        positive: The positive label of a binary task.

    Returns:
        The baseline's name and its metrics (the same names as :func:`score_predictions`).

    Examples:
        >>> name, metrics = baseline_metrics("regression", [1.0, 3.0], [2.0, 2.0])
        >>> name, metrics["rmse"]
        ("DummyRegressor(strategy='mean')", 0.0)
    """
    import numpy as np
    from sklearn.dummy import DummyClassifier, DummyRegressor

    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    x_train, x_test = np.zeros((len(y_train), 1)), np.zeros((len(y_test), 1))
    if task_type == "regression":
        regressor = DummyRegressor(strategy="mean").fit(x_train, y_train.astype("float64"))
        return "DummyRegressor(strategy='mean')", score_predictions(task_type, y_test, regressor.predict(x_test))
    classifier = DummyClassifier(strategy="prior").fit(x_train, y_train)
    labels = list(classes) if classes else sorted({*y_train.tolist(), *y_test.tolist()}, key=str)
    proba = class_probabilities(classifier, x_test, labels)
    return "DummyClassifier(strategy='prior')", score_predictions(task_type, y_test, classifier.predict(x_test),
                                                                  proba, labels, positive)


def count_non_finite(*arrays: Any) -> int:
    """Return how many values of numeric arrays are NaN or infinite (labels that are not numbers count as finite).

    Examples:
        >>> count_non_finite([1.0, float("nan")], [[0.5, float("inf")]], ["a", "b"])
        2
    """
    import numpy as np

    total = 0
    for values in arrays:
        if values is None:
            continue
        array = np.asarray(values)
        if array.dtype.kind in "fc":
            total += int((~np.isfinite(array)).sum())
        elif array.dtype.kind == "O":
            total += sum(1 for v in array.ravel() if isinstance(v, float) and not np.isfinite(v))
    return total
