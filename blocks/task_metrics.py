"""Task types and their metrics: the one place where metric names, directions and defaults live.

A model's task type is ``binary`` (two classes of any label type: 0/1, bool, "yes"/"no"),
``multiclass`` (three or more classes, string labels welcome) or ``regression``. It is inferred
from the training target when not given (:func:`infer_task_type`) and recorded on the run and the
registry version (tag ``mlops.task_type``). Every default that depends on it comes from here:
the metric that picks the best trial, the gate's primary metric, floors and guards, and the
metric monitoring compares with the champion's.

Examples:
    >>> import pandas as pd
    >>> infer_task_type(pd.Series(["setosa", "versicolor", "virginica", "setosa"]))
    'multiclass'
    >>> defaults_for("regression").primary_metric
    'rmse'
    >>> check_metrics("multiclass", ["roc_auc"], "PromotionPolicy.primary_metric")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: PromotionPolicy.primary_metric names 'roc_auc', which a multiclass model does not report; ...
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

TaskType = Literal["binary", "multiclass", "regression"]
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "regression")

#: Metric name -> "max" (larger is better) or "min" (smaller is better), per task type.
METRICS: dict[str, dict[str, str]] = {
    "binary": {"roc_auc": "max", "log_loss": "min", "accuracy": "max", "f1": "max", "precision": "max",
               "recall": "max"},
    "multiclass": {"f1_macro": "max", "roc_auc_ovr": "max", "log_loss": "min", "accuracy": "max",
                   "precision_macro": "max", "recall_macro": "max"},
    "regression": {"rmse": "min", "mae": "min", "r2": "max"},
}
#: Metrics where smaller is better, whatever the task type.
LOWER_IS_BETTER = frozenset(name for table in METRICS.values() for name, way in table.items() if way == "min")
#: Targets with at most this many distinct integer values are class labels (more: a regression target).
MAX_CLASSES = 20
#: Labels read as the positive class of a binary task (compared case-insensitively as text).
POSITIVE_WORDS = ("1", "true", "yes", "y", "positive", "pos", "t")


@dataclass(frozen=True)
class TaskDefaults:
    """The defaults of one task type (used when a policy or spec leaves a field empty)."""

    task_type: str
    primary_metric: str
    floors: dict[str, float] = field(default_factory=dict)
    guard_metrics: dict[str, float] = field(default_factory=dict)
    monitoring_metric: str = ""


_DEFAULTS: dict[str, TaskDefaults] = {
    "binary": TaskDefaults("binary", "roc_auc", {"roc_auc": 0.6}, {"accuracy": 0.02}, "roc_auc"),
    "multiclass": TaskDefaults("multiclass", "f1_macro", {"f1_macro": 0.5}, {"accuracy": 0.02}, "f1_macro"),
    "regression": TaskDefaults("regression", "rmse", {"r2": 0.0}, {"r2": 0.02}, "rmse"),
}


def defaults_for(task_type: str) -> TaskDefaults:
    """Return the defaults of a task type.

    Args:
        task_type: ``binary``, ``multiclass`` or ``regression``.

    Returns:
        The :class:`TaskDefaults`.

    Raises:
        ValueError: For an unknown task type.
    """
    if task_type not in _DEFAULTS:
        raise ValueError(f"Unknown task type {task_type!r}: use one of {list(TASK_TYPES)}.")
    return _DEFAULTS[task_type]


def metrics_for(task_type: str) -> list[str]:
    """Return the metric names a model of this task type reports, sorted."""
    defaults_for(task_type)
    return sorted(METRICS[task_type])


def direction(metric: str) -> str:
    """Return ``"min"`` for metrics where smaller is better, else ``"max"``."""
    return "min" if metric in LOWER_IS_BETTER else "max"


def check_metrics(task_type: str, names: Iterable[str], where: str) -> None:
    """Refuse metric names that a model of this task type cannot report.

    Args:
        task_type: The task type.
        names: Metric names a policy or spec uses.
        where: What names them, for the message (e.g. ``PromotionPolicy.floors``).

    Raises:
        ValueError: Naming the first unsupported metric and the supported ones.
    """
    supported = metrics_for(task_type)
    for name in names:
        if name not in METRICS[task_type]:
            raise ValueError(f"{where} names {name!r}, which a {task_type} model does not report; "
                             f"use one of {supported}.")


def _integer_valued(series: pd.Series) -> bool:
    import numpy as np

    values = series.dropna().to_numpy(dtype="float64")
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))


def infer_task_type(target: pd.Series) -> str:
    """Infer the task type from the training target.

    Text, boolean and categorical targets are class labels; so are numbers that are all
    integers with at most :data:`MAX_CLASSES` distinct values. Any other number is a
    regression target.

    Args:
        target: The target column (missing values are ignored).

    Returns:
        ``binary``, ``multiclass`` or ``regression``.

    Raises:
        ValueError: If the target has fewer than two distinct values.

    Examples:
        >>> import pandas as pd
        >>> infer_task_type(pd.Series([0, 1, 1, 0]))
        'binary'
        >>> infer_task_type(pd.Series([151.0, 75.0, 141.0, 206.5]))
        'regression'
    """
    import pandas as pd

    values = target.dropna()
    distinct = values.nunique()
    if distinct < 2:
        raise ValueError(f"Target {target.name!r} has {distinct} distinct value(s): a model needs at least two "
                         "classes or a varying number to learn from.")
    types = pd.api.types
    numeric = types.is_numeric_dtype(values) and not types.is_bool_dtype(values)
    if numeric and not (_integer_valued(values) and distinct <= MAX_CLASSES):
        return "regression"
    return "binary" if distinct == 2 else "multiclass"


def plain_label(value: Any) -> Any:
    """Return a JSON-native label (numpy scalars -> Python; floats that are integers -> int)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def class_labels(target: pd.Series) -> list[Any]:
    """Return the sorted distinct labels of a classification target, as JSON-native values."""
    labels = [plain_label(v) for v in target.dropna().unique().tolist()]
    try:
        return sorted(labels)
    except TypeError:  # mixed types: sort as text
        return sorted(labels, key=str)


def positive_label(classes: list[Any]) -> Any:
    """Return the positive class of a binary task: 1, True, "yes", ... else the larger label.

    Args:
        classes: The two labels (sorted as by :func:`class_labels`).

    Returns:
        The label whose probability is the binary score (scikit-learn's ``classes_[1]`` unless a
        label reads as positive).

    Examples:
        >>> positive_label(["no", "yes"])
        'yes'
        >>> positive_label(["Benign", "Malignant"])
        'Malignant'
    """
    if len(classes) != 2:
        raise ValueError(f"A binary task has two classes, got {classes}.")
    for label in classes:
        if str(label).strip().lower() in POSITIVE_WORDS:
            return label
    return classes[1]


#: Fairness metrics a promotion policy may name (fairlearn's; one-vs-rest per class for multiclass tasks).
FAIRNESS_METRICS: tuple[str, ...] = ("demographic_parity_difference", "equalized_odds_difference",
                                     "equal_opportunity_difference")
#: Task types accepted by ``TrainingSpec.task_type``: ``auto`` infers it, ``classification`` = binary or
#: multiclass by the number of labels.
REQUESTED_TASK_TYPES: tuple[str, ...] = ("auto", "classification", *TASK_TYPES)


def resolve_task_type(requested: str, target: pd.Series) -> str:
    """Return the concrete task type of a training target, checking a requested one against the labels.

    Args:
        requested: ``auto`` (infer), ``classification`` (binary or multiclass by the number of labels),
            ``binary``, ``multiclass`` or ``regression``.
        target: The training target column.

    Returns:
        ``binary``, ``multiclass`` or ``regression``.

    Raises:
        ValueError: If ``requested`` is unknown, or contradicts the target (e.g. ``binary`` with three
            labels, ``regression`` on text labels).

    Examples:
        >>> import pandas as pd
        >>> resolve_task_type("classification", pd.Series(["a", "b", "c"]))
        'multiclass'
        >>> resolve_task_type("auto", pd.Series([0.5, 1.25, 3.0]))
        'regression'
    """
    import pandas as pd

    if requested not in REQUESTED_TASK_TYPES:
        raise ValueError(f"Unknown task type {requested!r}: use one of {list(REQUESTED_TASK_TYPES)}.")
    inferred = infer_task_type(target)
    if requested == "auto":
        return inferred
    distinct = int(target.dropna().nunique())
    if requested == "regression":
        types = pd.api.types
        if not types.is_numeric_dtype(target) or types.is_bool_dtype(target):
            raise ValueError(f"Task type 'regression' needs a numeric target; {target.name!r} holds "
                             f"{target.dtype} labels. Use task_type 'auto' or 'classification'.")
        return "regression"
    labels = "binary" if distinct == 2 else "multiclass"
    if requested == "classification":
        return labels
    if requested != labels:
        raise ValueError(f"Task type {requested!r} does not fit target {target.name!r}: it has {distinct} distinct "
                         f"labels ({labels}). Use task_type 'auto' or {labels!r}.")
    return requested
