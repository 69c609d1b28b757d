"""The training spec: what to train (estimator by dotted path, parameters, search space) and how to split.

Also the resolved task (:class:`TaskInfo`) and the checks that fail before any work: an unknown
estimator path or invalid parameters are refused when the trials are expanded.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import random
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from blocks.task_metrics import TASK_TYPES, defaults_for
from tasks import lineage as L
from tasks.exceptions import TrainingConfigError
from tasks.sklearn_preprocessing import feature_roles

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


#: Default estimator, shared parameters and search space per kind of task (when the spec names none).
DEFAULT_ESTIMATORS: dict[str, tuple[str, dict[str, Any], dict[str, list[Any]]]] = {
    "classification": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000}, {"C": [0.1, 1.0, 10.0]}),
    "regression": ("sklearn.linear_model.Ridge", {}, {"alpha": [0.1, 1.0, 10.0]}),
}


class TrainingSpec(BaseModel):
    """What to train and how to split: a flow parameter.

    Left empty, ``estimator``, ``params`` and ``search_space`` come from the task type
    (:data:`DEFAULT_ESTIMATORS`: a logistic regression grid for binary and multiclass targets, a ridge
    ``alpha`` grid for regression); a spec that names an estimator keeps it (with empty params and
    search space unless given). ``task_type`` ``auto`` infers the task from the target.

    Examples:
        >>> spec = TrainingSpec(estimator="sklearn.ensemble.RandomForestClassifier",
        ...                     params={"n_estimators": 100}, search_space={"max_depth": [4, 8]})
        >>> len(expand_trials(spec))
        2
        >>> TrainingSpec().resolved("regression").estimator
        'sklearn.linear_model.Ridge'
    """

    estimator: str | None = Field(default=None, description="Dotted path of a scikit-learn estimator or pipeline "
                                  "factory (None: by task type, see DEFAULT_ESTIMATORS).")
    params: dict[str, Any] | None = Field(default=None, description="Parameters every trial shares "
                                          "(None: the default estimator's, else none).")
    search_space: dict[str, list[Any]] | None = Field(default=None, description="Parameter name -> candidate "
                                                      "values (None: the default estimator's grid, else none).")
    search: Literal["grid", "random"] = Field(default="grid", description="Grid or random search.")
    n_trials: int = Field(default=8, description="Trials drawn by random search.")
    split: Literal["random", "stratified", "time"] = Field(default="stratified", description="Split strategy "
                                                           "(stratified applies to classification only).")
    test_size: float = Field(default=0.2, description="Share of rows held out for the final test.")
    valid_size: float = Field(default=0.2, description="Share of the rest used to choose among trials.")
    time_column: str | None = Field(default="event_time", description="Timestamp column (time split; not a feature).")
    exclude_columns: list[str] = Field(default_factory=list, description="Columns that are not features.")
    task_type: Literal["auto", "classification", "binary", "multiclass", "regression"] = Field(
        default="auto", description="Kind of problem: auto (inferred from the target), binary, multiclass, "
        "regression, or classification (binary or multiclass by the number of labels).")
    selection_metric: str | None = Field(default=None, description="Metric that picks the best trial "
                                         "(None: the task type's primary metric).")
    seed: int = Field(default=0, description="Random seed for splits, search and estimators.")

    def fingerprint(self) -> str:
        """Return a short stable hash of the spec (part of cache and training keys)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def resolved(self, task_type: str, time_column: str | None = None) -> TrainingSpec:
        """Return a copy with a concrete task type, estimator, parameters and search space.

        Args:
            task_type: ``binary``, ``multiclass`` or ``regression`` (from :func:`resolve_training_task`).
            time_column: The data contract's time column, which replaces ``time_column`` when given.

        Returns:
            The concrete spec.
        """
        estimator, params, space = DEFAULT_ESTIMATORS["regression" if task_type == "regression" else "classification"]
        if self.estimator is not None:
            estimator, params, space = self.estimator, {}, {}
        return self.model_copy(update={
            "task_type": task_type, "estimator": estimator,
            "params": dict(self.params if self.params is not None else params),
            "search_space": dict(self.search_space if self.search_space is not None else space),
            "time_column": time_column or self.time_column})

    def metric(self, task_type: str | None = None) -> str:
        """Return the metric that picks the best trial (the task type's primary metric by default)."""
        kind = task_type or self.task_type
        if kind == "classification":
            kind = "binary"
        return self.selection_metric or (defaults_for(kind).primary_metric if kind in TASK_TYPES else "roc_auc")


class TaskInfo(BaseModel):
    """The task resolved once from the training data: its type, label set and positive label."""

    task_type: str
    target: str
    classes: list[Any] = Field(default_factory=list)
    positive_label: Any = None

    def tags(self) -> dict[str, str]:
        """Return the lineage tags ``mlops.task_type``, ``mlops.classes``, ``mlops.positive_label``."""
        tags = {L.TAG_TASK_TYPE: self.task_type, L.TAG_CLASSES: json.dumps(self.classes)}
        if self.task_type == "binary":
            tags[L.TAG_POSITIVE_LABEL] = json.dumps(self.positive_label)
        return tags


def import_estimator(dotted: str) -> type:
    """Import an estimator class (or factory) from its dotted path.

    Args:
        dotted: e.g. ``sklearn.ensemble.RandomForestClassifier``.

    Returns:
        The class.

    Raises:
        TrainingConfigError: If the path does not name an importable estimator.
    """
    module_name, _, attr = dotted.rpartition(".")
    try:
        estimator = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise TrainingConfigError(
            f"Unknown estimator {dotted!r}: {exc}. Use a dotted path such as "
            "'sklearn.ensemble.RandomForestClassifier' of an installed package."
        ) from exc
    if not callable(estimator):
        raise TrainingConfigError(f"{dotted!r} is not a class or factory of estimators.")
    return estimator


def make_estimator(dotted: str, params: dict[str, Any]) -> Any:
    """Build and check an estimator: unknown or invalid parameters fail here, not mid-fit.

    Args:
        dotted: Dotted path of the estimator.
        params: Its parameters.

    Returns:
        The unfitted estimator.

    Raises:
        TrainingConfigError: If the estimator cannot be built or a parameter is invalid.
    """
    factory = import_estimator(dotted)
    try:
        estimator = factory(**params)
        if hasattr(estimator, "_validate_params"):
            estimator._validate_params()
    except Exception as exc:  # TypeError, ValueError, sklearn's InvalidParameterError
        raise TrainingConfigError(f"Invalid parameters {params} for {dotted}: {exc}") from exc
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
        raise TrainingConfigError(f"{dotted} built an object without fit/predict; it is not an estimator.")
    return estimator


def expand_trials(spec: TrainingSpec) -> list[dict[str, Any]]:
    """Expand the search space into one parameter dict per trial, each checked.

    A spec whose task type is not resolved yet and that names no estimator is checked once the task
    type is known (:meth:`TrainingSpec.resolved`); the defaults of every task type are valid.

    Args:
        spec: The training spec.

    Returns:
        Parameter dicts (shared params merged with each candidate).

    Raises:
        TrainingConfigError: If the estimator or any candidate's parameters are invalid.
    """
    if spec.estimator is None:
        spec = spec.resolved(spec.task_type if spec.task_type in TASK_TYPES else "binary")
    space = spec.search_space or {}
    names = sorted(space)
    grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(space[n] for n in names))]
    if spec.search == "random" and len(grid) > spec.n_trials:
        grid = random.Random(spec.seed).sample(grid, spec.n_trials)
    trials = [{**(spec.params or {}), **candidate} for candidate in grid] or [dict(spec.params or {})]
    for params in trials:
        make_estimator(spec.estimator or "", params)
    return trials


def feature_columns(frame: pd.DataFrame, target: str, spec: TrainingSpec,
                    roles: dict[str, str] | None = None) -> list[str]:
    """Return the feature columns: not the target, time column, exclusions, identifiers or free text."""
    return list(feature_roles(frame, target, roles, [*(spec.exclude_columns or []), spec.time_column or ""]))
