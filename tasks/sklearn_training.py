"""scikit-learn training: resolve the task, split, run parallel trials, pick the best.

Trials are Prefect tasks (:func:`submit_trials`) run by the calling flow's task runner: in
``continuous-training`` that is the ``tune-trials`` subflow's (``flows/tuning.py``: threads by default,
or a Dask cluster with ``prefect-dask``). Their results are cached on the data hash,
estimator, parameters and feature roles, so a retried pipeline skips trials it already ran,
and refits only those whose model file is missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from pydantic import BaseModel, Field

from blocks.promotion_policy import PromotionPolicy
from blocks.task_metrics import (
    LOWER_IS_BETTER,
    TASK_TYPES,
    check_metrics,
    class_labels,
    direction,
    positive_label,
    resolve_task_type,
)
from tasks.exceptions import TrainingConfigError
from tasks.logs import run_logger
from tasks.model_scoring import class_probabilities, positive_scores, score_predictions
from tasks.sample_data import read_frame
from tasks.sklearn_preprocessing import build_pipeline, feature_roles, infer_column_roles
from tasks.sklearn_spec import (
    DEFAULT_ESTIMATORS,
    TaskInfo,
    TrainingSpec,
    expand_trials,
    feature_columns,
    import_estimator,
    make_estimator,
)
from tasks.system import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from prefect.futures import PrefectFuture

# Re-exported: other modules import them from here.
__all__ = ["DEFAULT_ESTIMATORS", "LOWER_IS_BETTER", "TaskInfo", "TrainingSpec", "build_pipeline", "expand_trials",
           "feature_columns", "import_estimator", "make_estimator", "positive_scores", "score_predictions"]


class SplitFiles(BaseModel):
    """Local Parquet files of one split, named by the data hash, and the model's features with their roles.

    ``roles`` holds the model's features only; ``column_roles`` every column of the data (identifiers,
    free text, the target and the time column included), as recorded in the ``mlops.column_roles`` tag.
    """

    train: str
    valid: str
    test: str
    rows: dict[str, int]
    features: list[str]
    roles: dict[str, str] = Field(default_factory=dict)
    time_column: str = ""
    column_roles: dict[str, str] = Field(default_factory=dict)


class TrialResult(BaseModel):
    """One trained trial: its parameters, validation metrics and where the model is."""

    trial: int
    params: dict[str, Any]
    metrics: dict[str, float]
    model_path: str
    fit_seconds: float




@task(name="resolve-training-task", cache_policy=NO_CACHE)
def resolve_training_task(dataset_file: str, target: str, spec: TrainingSpec, policy: PromotionPolicy | None = None,
                          required: bool = True) -> TaskInfo | None:
    """Resolve the task type, label set and positive label from the training data; check the metrics named.

    Runs before any trial: a selection metric or a promotion policy that names a metric this task
    cannot produce is refused here, naming the field and the valid metrics.

    Args:
        dataset_file: The training dataset.
        target: Target column.
        spec: The training spec (``task_type`` ``auto`` infers it).
        policy: The promotion policy to check against the task type.
        required: With False, a missing target returns None (data validation then reports it).

    Returns:
        The :class:`TaskInfo`, or None (``required=False`` and no target column).

    Raises:
        TrainingConfigError: The target is missing, contradicts the requested task type, or a metric
            named by the spec or the policy does not exist for this task type.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def kind(path: str) -> str:
        ...     return resolve_training_task(path, "species", TrainingSpec()).task_type
    """
    from sklearn.base import is_classifier, is_regressor

    frame = read_frame(dataset_file)
    if target not in frame.columns:
        if not required:
            return None
        raise TrainingConfigError(f"Target column {target!r} is not in {dataset_file} (columns: "
                                  f"{list(frame.columns)}): pass the right `target`.")
    try:
        task_type = resolve_task_type(spec.task_type, frame[target])
    except ValueError as exc:
        raise TrainingConfigError(f"TrainingSpec.task_type: {exc}") from exc
    classes = class_labels(frame[target]) if task_type != "regression" else []
    info = TaskInfo(task_type=task_type, target=target, classes=classes,
                    positive_label=positive_label(classes) if task_type == "binary" else None)
    try:
        if spec.selection_metric:
            check_metrics(task_type, [spec.selection_metric], "TrainingSpec.selection_metric")
        if policy is not None:
            policy.resolved(task_type)
    except ValueError as exc:
        raise TrainingConfigError(f"{exc} Nothing was trained.") from exc
    concrete = spec.resolved(task_type)
    estimator = make_estimator(concrete.estimator or "", {**(concrete.params or {})})
    wrong = is_regressor(estimator) if task_type != "regression" else is_classifier(estimator)
    if wrong:
        kind = "regressor" if task_type == "regression" else "classifier"
        raise TrainingConfigError(f"TrainingSpec.estimator {concrete.estimator!r} does not fit a {task_type} task "
                                  f"(target {target!r}); choose a {kind} or set TrainingSpec.task_type.")
    expand_trials(concrete)
    run_logger().info("Task of target %r: %s%s", target, task_type, f" with labels {classes}" if classes else "")
    return info


def _split_dir(output_dir: str, dataset_file: str, spec: TrainingSpec) -> Path:
    return Path(output_dir) / f"{Path(dataset_file).stem}-{spec.fingerprint()}"


def split_files_exist(dataset_file: str, spec: TrainingSpec, output_dir: str) -> bool:
    """Whether the files a cached split names are still on disk (else refresh the cache)."""
    folder = _split_dir(output_dir, dataset_file, spec)
    return all((folder / f"{name}.parquet").is_file() for name in ("train", "valid", "test"))


def _split_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    spec: TrainingSpec = parameters["spec"]
    extra = json.dumps([parameters.get("roles"), parameters.get("task_type")], sort_keys=True, default=str)
    return (f"split-{Path(parameters['dataset_file']).stem}-{parameters['target']}-{spec.fingerprint()}-"
            f"{hashlib.sha256(extra.encode()).hexdigest()[:12]}")


def _time_order(frame: pd.DataFrame, column: str) -> Any:
    import pandas as pd

    values = frame[column]
    if not pd.api.types.is_datetime64_any_dtype(values) and not pd.api.types.is_numeric_dtype(values):
        values = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")  # dates as strings
    return values


@task(name="split-dataset", cache_key_fn=_split_cache_key, persist_result=True)
def split_dataset(dataset_file: str, target: str, spec: TrainingSpec, output_dir: str,
                  roles: dict[str, str] | None = None, task_type: str | None = None) -> SplitFiles:
    """Split a dataset into train / validation / test Parquet files and choose the features by role.

    ``random`` shuffles, ``stratified`` keeps the class shares (classification only: a regression
    target is split at random), ``time`` puts the newest rows in test (then validation), as a model
    meets the future in production.

    Args:
        dataset_file: Local dataset file; its name is the data hash (from ``pull_dataset``).
        target: Target column.
        spec: The training spec (split strategy, sizes, seed, time column, exclusions).
        output_dir: Folder for the split files.
        roles: Column -> role from the data contract (None: inferred from the data).
        task_type: The resolved task type (default: ``spec.task_type``).

    Returns:
        Paths of the three files, their row counts, the feature columns and their roles.

    Raises:
        TrainingConfigError: If the split cannot be made (e.g. no time column).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def prepare(path: str) -> SplitFiles:
        ...     return split_dataset(path, "churned", TrainingSpec(split="time"), "/tmp/splits")
    """
    from sklearn.model_selection import train_test_split

    logger = run_logger()
    frame = read_frame(dataset_file)
    kind = task_type or spec.task_type
    stratify = spec.split == "stratified" and kind != "regression"
    if spec.split == "time":
        if not spec.time_column or spec.time_column not in frame.columns:
            raise TrainingConfigError(f"Time split needs a time column; {spec.time_column!r} is not in the data. "
                                      "Set TrainingSpec.time_column (or the contract's time_column).")
        order = _time_order(frame, spec.time_column)
        frame = frame.iloc[order.argsort(kind="stable")].reset_index(drop=True)
        n_test = int(len(frame) * spec.test_size)
        n_valid = int((len(frame) - n_test) * spec.valid_size)
        train = frame.iloc[: len(frame) - n_test - n_valid]
        valid = frame.iloc[len(frame) - n_test - n_valid: len(frame) - n_test]
        test = frame.iloc[len(frame) - n_test:]
    else:
        def cut(data: pd.DataFrame, size: float, strat: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
            try:
                return train_test_split(data, test_size=size, random_state=spec.seed,
                                        stratify=data[target] if strat else None)
            except ValueError as exc:
                if not strat:
                    raise TrainingConfigError(f"Cannot split {dataset_file} ({spec.split}): {exc}") from exc
                # A class too rare to stratify (one row): a random split is the best that can be done.
                logger.warning("Stratified split of %s impossible (%s); splitting at random", dataset_file, exc)
                return cut(data, size, False)

        rest, test = cut(frame, spec.test_size, stratify)
        train, valid = cut(rest, spec.valid_size, stratify)
    out = _split_dir(output_dir, dataset_file, spec)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        paths[name] = str(out / f"{name}.parquet")
        part.to_parquet(paths[name], index=False)
    chosen = feature_roles(frame, target, roles, [*(spec.exclude_columns or []), spec.time_column or ""])
    if not chosen:
        raise TrainingConfigError(f"{dataset_file} has no feature column besides target {target!r}, the time "
                                  "column, identifiers and free text: add features or check the column roles.")
    logger.info("Split %s: %d / %d / %d rows; features by role %s", Path(dataset_file).name, len(train), len(valid),
                len(test), chosen)
    return SplitFiles(**paths, rows={"train": len(train), "valid": len(valid), "test": len(test)},
                      features=list(chosen), roles=chosen,
                      time_column=spec.time_column if spec.time_column in frame.columns else "",
                      column_roles={**infer_column_roles(frame, target), **(roles or {}), target: "target"})


def _trial_key(split: SplitFiles, target: str, spec: TrainingSpec, params: dict[str, Any]) -> str:
    payload = json.dumps([split.train, target, spec.estimator, params, spec.seed, spec.task_type, split.roles],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def trial_model_path(split: SplitFiles, target: str, spec: TrainingSpec, params: dict[str, Any],
                     model_dir: str) -> Path:
    """Where one trial's fitted model is written."""
    return Path(model_dir) / f"{_trial_key(split, target, spec, params)}.joblib"


def trial_models_exist(split: SplitFiles, target: str, spec: TrainingSpec, trials: list[dict[str, Any]],
                       model_dir: str) -> bool:
    """Whether the models cached trials name are all still on disk."""
    return all(trial_model_path(split, target, spec, p, model_dir).is_file() for p in trials)


def _trial_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return "trial-" + _trial_key(parameters["split"], parameters["target"], parameters["spec"], parameters["params"])


def _task_of(spec: TrainingSpec, task: TaskInfo | None, target: str, train: pd.DataFrame) -> TaskInfo:
    if task is not None:
        return task
    kind = resolve_task_type(spec.task_type, train[target])
    classes = class_labels(train[target]) if kind != "regression" else []
    return TaskInfo(task_type=kind, target=target, classes=classes,
                    positive_label=positive_label(classes) if kind == "binary" else None)


@task(name="train-trial", cache_key_fn=_trial_cache_key, persist_result=True,
      task_run_name="train-trial-{trial}")
def train_trial(split: SplitFiles, target: str, spec: TrainingSpec, params: dict[str, Any], trial: int,
                model_dir: str, task: TaskInfo | None = None) -> TrialResult:
    """Fit one trial (preprocessing by column role + estimator) and score it on the validation split.

    Cached on the data hash, estimator, parameters, seed and feature roles: a retried pipeline reuses
    it. Never retried (training is not idempotent I/O).

    Args:
        split: The split files.
        target: Target column.
        spec: The training spec (resolved: :meth:`TrainingSpec.resolved`).
        params: This trial's parameters.
        trial: Trial number (for names).
        model_dir: Folder for the fitted model.
        task: The resolved task (labels, positive label); None resolves it from the training split.

    Returns:
        The trial's parameters, validation metrics and model path.

    Raises:
        TrainingConfigError: If the estimator rejects its parameters or the data.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def tune(split: SplitFiles) -> list[TrialResult]:
        ...     spec = TrainingSpec().resolved("binary")
        ...     trials = expand_trials(spec)
        ...     return train_trial.map(split, "churned", spec, trials, range(len(trials)), "/tmp/models").result()
    """
    import joblib

    logger = run_logger()
    train = read_frame(split.train)
    valid = read_frame(split.valid)
    info = _task_of(spec, task, target, train)
    path = trial_model_path(split, target, spec, params, model_dir)  # named by the spec as given (submit_trials)
    if spec.estimator is None or spec.task_type not in TASK_TYPES:
        spec = spec.resolved(info.task_type)
    estimator = make_estimator(spec.estimator or "", params)
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=spec.seed)
    pipeline = build_pipeline(estimator, train, split.features, split.roles or None)
    started = time.perf_counter()
    try:
        pipeline.fit(train[split.features], train[target])
    except (ValueError, TypeError) as exc:
        raise TrainingConfigError(f"Trial {trial} ({spec.estimator} {params}) failed to fit: {exc}") from exc
    fit_seconds = time.perf_counter() - started
    x_valid = valid[split.features]
    proba = class_probabilities(pipeline, x_valid, info.classes) if info.task_type != "regression" else None
    metrics = score_predictions(info.task_type, valid[target].to_numpy(), pipeline.predict(x_valid), proba,
                                info.classes, info.positive_label)
    with atomic_path(path) as partial:  # a killed run never leaves a half-written model that looks complete
        joblib.dump(pipeline, partial)
    logger.info("Trial %d %s: %s (%.2fs)", trial, params, {k: round(v, 4) for k, v in metrics.items()}, fit_seconds)
    return TrialResult(trial=trial, params=params, metrics=metrics, model_path=str(path), fit_seconds=fit_seconds)


def submit_trials(split: SplitFiles, target: str, spec: TrainingSpec, trials: list[dict[str, Any]],
                  model_dir: str, task: TaskInfo | None = None) -> list[PrefectFuture]:
    """Submit one ``train-trial`` task per parameter set; only trials whose model file is missing are refit.

    A trial whose cached result names a model file that is still on disk is served from the cache;
    one whose file is gone (deleted, or the run was killed before writing it) refreshes its own cache
    entry, so a re-run after a crash refits only what is missing (not every trial). Call inside a flow.

    Args:
        split: The split files.
        target: Target column.
        spec: The resolved training spec.
        trials: Parameter dicts (:func:`expand_trials`).
        model_dir: Folder for the fitted models.
        task: The resolved task.

    Returns:
        One future per trial, in order.
    """
    return [train_trial.with_options(refresh_cache=not trial_model_path(split, target, spec, params,
                                                                        model_dir).is_file())
            .submit(split, target, spec, params, number, model_dir, task)
            for number, params in enumerate(trials)]


@task(name="select-best-trial", cache_policy=NO_CACHE)
def select_best_trial(trials: list[TrialResult], metric: str) -> TrialResult:
    """Pick the trial with the best validation metric.

    Args:
        trials: Finished trials.
        metric: Metric to compare (its direction from :mod:`blocks.task_metrics`).

    Returns:
        The best trial.

    Raises:
        TrainingConfigError: If no trial reports the metric.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def pick(trials: list[TrialResult]) -> int:
        ...     return select_best_trial(trials, "roc_auc").trial
    """
    scored = [t for t in trials if metric in t.metrics]
    if not scored:
        raise TrainingConfigError(f"No trial reports metric {metric!r} on the validation split; available: "
                                  f"{sorted(trials[0].metrics) if trials else []}. Set TrainingSpec.selection_metric "
                                  "to one of them.")
    sign = 1 if direction(metric) == "min" else -1
    return min(scored, key=lambda t: (sign * t.metrics[metric], t.trial))
