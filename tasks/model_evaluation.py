"""Evaluate a model on held-out data: metrics, per-slice metrics, fairness (fairlearn), plots.

A model that genuinely cannot score the test set (columns, labels or task type differ) raises
:class:`ModelUnscorableError`, which the gate handles by policy; a model file that cannot be loaded
raises :class:`RegistryError`, which fails the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.task_metrics import class_labels, defaults_for, plain_label
from blocks.task_metrics import positive_label as default_positive
from tasks.exceptions import ModelUnscorableError, RegistryError
from tasks.logs import run_logger
from tasks.model_plots import PlotData, collect_plot_data, render_plots
from tasks.model_scoring import (
    baseline_metrics,
    class_probabilities,
    count_non_finite,
    fairness_report,
    matches,
    score_predictions,
)
from tasks.sample_data import read_frame

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd


class Evaluation(BaseModel):
    """Metrics of one model on one test set, and what was scored (task, labels, features, test rows)."""

    model: str
    rows: int
    metrics: dict[str, float]
    slice_metrics: dict[str, dict[str, dict[str, float]]] = {}
    slice_gaps: dict[str, float] = {}
    fairness: dict[str, Any] = {}
    plots: list[str] = []
    task_type: str = ""
    classes: list[Any] = []
    positive_label: Any = None
    features: list[str] = []
    test_digest: str = ""
    #: Permutation importance on the test split, by original column name (empty without plots).
    importance: dict[str, float] = {}
    #: The numbers behind the plots, to draw them again with the version and the champion (tasks/model_plots.py).
    plot_data: PlotData | None = None
    #: Metrics of the simplest model (class prior / mean of the training labels) on the same test rows;
    #: None: not measured (a hand-made evaluation), which the gate's baseline rule rejects.
    baseline: dict[str, float] | None = None
    #: What the baseline is, e.g. ``DummyClassifier(strategy='prior') fitted on the training split``.
    baseline_model: str = ""
    #: NaN or infinite values among the predictions and probabilities (any rejects: metrics are then empty).
    non_finite: int = 0


def load_model(model_path: str) -> Any:
    """Load a model from a joblib file or an MLflow model folder."""
    path = Path(model_path)
    if path.is_dir():
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(path))
    import joblib

    return joblib.load(path)


def file_digest(path: str) -> str:
    """Return the sha256 (first 16 hex digits) of a file: which test rows were scored."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _slice_table(task_type: str, frame: pd.DataFrame, target: str, pred: np.ndarray, proba: np.ndarray | None,
                 column: str, metric: str, min_rows: int, classes: list[Any],
                 positive: Any) -> tuple[dict[str, dict[str, float]], float]:
    table: dict[str, dict[str, float]] = {}
    y_all = frame[target].to_numpy()
    for value, idx in frame.groupby(column, observed=True, dropna=False).indices.items():
        row = score_predictions(task_type, y_all[idx], pred[idx], None if proba is None else proba[idx], classes,
                                positive)
        row["rows"] = float(len(idx))
        table[str(value)] = row
    gated = [r[metric] for r in table.values() if r["rows"] >= min_rows and metric in r]
    return table, float(max(gated) - min(gated)) if len(gated) >= 2 else 0.0


def _model_features(model: Any, features: list[str] | None) -> list[str]:
    names = getattr(model, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else list(features or [])


def _check_scorable(model: Any, frame: pd.DataFrame, features: list[str], task_type: str, classes: list[Any],
                    label: str, model_path: str) -> None:
    """Raise ModelUnscorableError if the model's columns, task type or labels differ from the test set's."""
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ModelUnscorableError(f"The {label} model {model_path} needs columns {missing} that the test set "
                                   f"lacks (it has {list(frame.columns)}): the data's columns changed.")
    model_classes = getattr(model, "classes_", None)
    if task_type == "regression" and model_classes is not None:
        raise ModelUnscorableError(f"The {label} model {model_path} is a classifier (labels "
                                   f"{[plain_label(c) for c in model_classes]}); this task is a regression.")
    if task_type != "regression":
        if model_classes is None:
            raise ModelUnscorableError(f"The {label} model {model_path} predicts numbers (a regressor); this task "
                                       f"is {task_type} with labels {classes}.")
        theirs = sorted(str(plain_label(c)) for c in model_classes)
        unknown = sorted(set(theirs) - {str(c) for c in classes})
        if unknown:  # a subset is fine (a class absent from its training data); a foreign label is not
            raise ModelUnscorableError(f"The {label} model {model_path} predicts labels {unknown} that are not in the "
                                       f"training label set {classes}: their labels differ.")


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(model_path: str, test_file: str, target: str, task_type: str, features: list[str],
                   slice_columns: list[str] | None = None, sensitive_attribute: str | None = None,
                   primary_metric: str | None = None, min_slice_rows: int = 30,
                   plot_dir: str | None = None, label: str = "challenger", classes: list[Any] | None = None,
                   positive_label: Any = None, fairness_metric: str | None = None,
                   title: str | None = None, curves: bool = False, train_file: str | None = None) -> Evaluation:
    """Evaluate a model on a test file: metrics, per-slice metrics and gaps, fairness, plots.

    Args:
        model_path: A joblib file or an MLflow model folder.
        test_file: Local Parquet / CSV test data.
        target: Target column.
        task_type: ``binary``, ``multiclass`` or ``regression`` (``classification`` still accepted).
        features: Feature columns (a fitted pipeline's own input columns take precedence: a champion
            trained on other columns is scored on its own).
        slice_columns: Columns to slice by.
        sensitive_attribute: Column for the fairness disparity.
        primary_metric: Metric compared across slices (None: the task type's).
        min_slice_rows: Slices smaller than this do not count towards the gap.
        plot_dir: Where to write plots (none when empty).
        label: Name of the model in logs (``challenger``, ``champion``).
        classes: The training label set (None: the labels of the test set and predictions).
        positive_label: The positive label of a binary task (None: from ``classes``).
        fairness_metric: fairlearn metric for classifiers (None: demographic parity difference).
        title: Title of the plots (None: the label and the estimator's class).
        curves: Keep the numbers behind the plots (``plot_data``, without importances) even without
            ``plot_dir``: the champion's curves, overlaid on the challenger's plots.
        train_file: The training split; the baseline (class prior / mean) is fitted on its labels
            (None: on the test labels, a slightly stronger baseline).

    Returns:
        The evaluation. Predictions or probabilities with NaN or infinite values fail closed: the
        evaluation has no metrics and ``non_finite`` counts them (the gate rejects it).

    Raises:
        ModelUnscorableError: The model cannot score this test set (columns, labels or task type differ).
        RegistryError: The model file cannot be loaded (a broken artifact, not a property of the data).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def check(model: str, test: str) -> float:
        ...     evaluation = evaluate_model(model, test, "churned", "binary", ["tenure_months"], classes=[0, 1])
        ...     return evaluation.metrics["roc_auc"]
    """
    import numpy as np

    logger = run_logger()
    frame = read_frame(test_file)
    try:
        model = load_model(model_path)
    except Exception as exc:  # joblib / skops / YAML errors of a broken artifact
        raise RegistryError(f"Loading the {label} model from {model_path} failed: {exc}. The model files are broken "
                            "or incomplete: re-download or re-register the version.") from exc
    if task_type == "classification" or (classes is None and task_type != "regression"):
        labels = class_labels(frame[target]) if classes is None else classes
        task_type = "binary" if len(labels) <= 2 and task_type != "multiclass" else "multiclass"
        classes = labels
    classes = list(classes or [])
    positive = positive_label if positive_label is not None or task_type != "binary" else default_positive(classes)
    features = _model_features(model, features)
    _check_scorable(model, frame, features, task_type, classes, label, model_path)
    try:
        x = frame[features]
        pred = np.asarray(model.predict(x))
        proba = class_probabilities(model, x, classes) if task_type != "regression" else None
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelUnscorableError(f"The {label} model {model_path} cannot score {test_file}: {exc}") from exc
    y = frame[target].to_numpy()
    non_finite = count_non_finite(pred, proba)
    if non_finite:
        logger.warning("%s predicts %d NaN/inf values on %d test rows: not scored", label, non_finite, len(frame))
        return Evaluation(model=label, rows=len(frame), metrics={}, task_type=task_type, classes=classes,
                          positive_label=positive, features=features, test_digest=file_digest(test_file),
                          non_finite=non_finite)
    metrics = score_predictions(task_type, y, pred, proba, classes, positive)
    y_train = read_frame(train_file)[target].to_numpy() if train_file else y
    baseline_name, baseline = baseline_metrics(task_type, y_train, y, classes, positive)
    baseline_name += " fitted on the " + ("training split" if train_file else "test labels")
    primary = primary_metric or defaults_for(task_type).primary_metric
    slices: dict[str, dict[str, dict[str, float]]] = {}
    gaps: dict[str, float] = {}
    for column in slice_columns or []:
        if column in frame.columns:
            slices[column], gaps[column] = _slice_table(task_type, frame, target, pred, proba, column, primary,
                                                        min_slice_rows, classes, positive)
    fairness: dict[str, Any] = {}
    if sensitive_attribute and sensitive_attribute in frame.columns:
        fairness = {"attribute": sensitive_attribute, **fairness_report(
            task_type, y, pred, frame[sensitive_attribute].to_numpy(), fairness_metric, classes, positive,
            primary if task_type == "regression" else "rmse")}
    score = None
    if proba is not None and task_type == "binary":
        score = proba[:, [str(c) for c in classes].index(str(positive))]
    plot_data, plots = None, []
    if plot_dir or curves:
        truth = matches(y, positive) if task_type == "binary" else None
        plot_data = collect_plot_data(task_type, model, x, y, pred, score, truth, importance=bool(plot_dir))
    if plot_dir and plot_data is not None:
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        plots = render_plots(plot_data, plot_dir, title or f"{label}: {type(final).__name__}, {len(frame)} test rows")
    logger.info("%s on %d test rows: %s", label, len(frame), {k: round(v, 4) for k, v in metrics.items()})
    return Evaluation(model=label, rows=len(frame), metrics=metrics, slice_metrics=slices, slice_gaps=gaps,
                      fairness=fairness, plots=plots, task_type=task_type, classes=classes,
                      positive_label=positive, features=features, test_digest=file_digest(test_file),
                      importance=plot_data.importance if plot_data else {}, plot_data=plot_data,
                      baseline=baseline, baseline_model=baseline_name)


class ChampionScore(BaseModel):
    """The champion on the new test set: its evaluation, or why it genuinely cannot score that data."""

    evaluation: Evaluation | None = None
    unscorable: str | None = None


@task(name="evaluate-champion", cache_policy=NO_CACHE)
def evaluate_champion(model_dir: str, test_file: str, target: str, task_type: str, features: list[str],
                      slice_columns: list[str] | None = None, sensitive_attribute: str | None = None,
                      primary_metric: str | None = None, min_slice_rows: int = 30, classes: list[Any] | None = None,
                      positive_label: Any = None, fairness_metric: str | None = None) -> ChampionScore:
    """Score the champion on the challenger's test set; a champion that cannot score it is a result, not an error.

    Only :class:`ModelUnscorableError` (its columns, labels or task type differ) becomes
    ``unscorable``, which the gate handles by policy. Anything else (a model file that does not
    load, a disk error) propagates and fails the run: an infrastructure error is never "no champion".

    Args:
        model_dir: The champion's local MLflow model folder (``download_model_version``).
        test_file: The challenger's test split.
        target: Target column.
        task_type: The task type of this training.
        features: The challenger's features (the champion's own input columns take precedence).
        slice_columns: Columns to slice by.
        sensitive_attribute: Column for the fairness disparity.
        primary_metric: Metric compared across slices.
        min_slice_rows: Slices smaller than this do not count towards the gap.
        classes: The training label set.
        positive_label: The positive label of a binary task.
        fairness_metric: fairlearn metric for classifiers.

    Returns:
        The champion's evaluation, or the reason it cannot score this test set.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def compare(champion_dir: str, test: str) -> bool:
        ...     return evaluate_champion(champion_dir, test, "churned", "binary", ["tenure_months"]).unscorable is None
    """
    try:
        evaluation = evaluate_model.fn(
            model_dir, test_file, target, task_type, features, slice_columns, sensitive_attribute, primary_metric,
            min_slice_rows, None, "champion", classes, positive_label, fairness_metric, curves=True)
    except ModelUnscorableError as exc:
        run_logger().warning("Champion cannot be scored on this test set: %s", exc)
        return ChampionScore(unscorable=str(exc))
    if evaluation.non_finite:
        return ChampionScore(unscorable=f"the champion predicts {evaluation.non_finite} NaN/inf values on "
                                        f"{evaluation.rows} test rows")
    return ChampionScore(evaluation=evaluation)
