"""scikit-learn training: split, build an estimator by dotted path, run parallel trials.

Trials are Prefect tasks: ``train_trial.map(...)`` runs them through the flow's task
runner (threads by default, a Dask cluster with ``prefect-dask``). Their results are
cached on the data hash, estimator and parameters, so a retried pipeline skips trials
it already ran.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from pydantic import BaseModel, Field

from tasks.exceptions import TrainingConfigError
from tasks.logs import run_logger
from tasks.sample_data import read_frame

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd


class TrainingSpec(BaseModel):
    """What to train and how to split: a flow parameter.

    Examples:
        >>> spec = TrainingSpec(estimator="sklearn.ensemble.RandomForestClassifier",
        ...                     params={"n_estimators": 100}, search_space={"max_depth": [4, 8]})
        >>> len(expand_trials(spec))
        2
    """

    estimator: str = Field(default="sklearn.linear_model.LogisticRegression",
                           description="Dotted path of a scikit-learn estimator or pipeline factory.")
    params: dict[str, Any] = Field(default_factory=lambda: {"max_iter": 1000},
                                   description="Parameters every trial shares.")
    search_space: dict[str, list[Any]] = Field(default_factory=lambda: {"C": [0.1, 1.0, 10.0]},
                                               description="Parameter name -> candidate values.")
    search: Literal["grid", "random"] = Field(default="grid", description="Grid or random search.")
    n_trials: int = Field(default=8, description="Trials drawn by random search.")
    split: Literal["random", "stratified", "time"] = Field(default="stratified", description="Split strategy.")
    test_size: float = Field(default=0.2, description="Share of rows held out for the final test.")
    valid_size: float = Field(default=0.2, description="Share of the rest used to choose among trials.")
    time_column: str | None = Field(default="event_time", description="Timestamp column (time split; not a feature).")
    exclude_columns: list[str] = Field(default_factory=list, description="Columns that are not features.")
    task_type: Literal["classification", "regression"] = Field(default="classification",
                                                               description="Kind of problem.")
    selection_metric: str | None = Field(default=None, description="Metric that picks the best trial.")
    seed: int = Field(default=0, description="Random seed for splits, search and estimators.")

    def fingerprint(self) -> str:
        """Return a short stable hash of the spec (part of cache and training keys)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def metric(self) -> str:
        """Return the metric that picks the best trial."""
        return self.selection_metric or ("roc_auc" if self.task_type == "classification" else "rmse")


class SplitFiles(BaseModel):
    """Local Parquet files of one split, named by the data hash."""

    train: str
    valid: str
    test: str
    rows: dict[str, int]
    features: list[str]


class TrialResult(BaseModel):
    """One trained trial: its parameters, validation metrics and where the model is."""

    trial: int
    params: dict[str, Any]
    metrics: dict[str, float]
    model_path: str
    fit_seconds: float


LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse", "log_loss", "brier"})


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

    Args:
        spec: The training spec.

    Returns:
        Parameter dicts (shared params merged with each candidate).

    Raises:
        TrainingConfigError: If the estimator or any candidate's parameters are invalid.
    """
    names = sorted(spec.search_space)
    grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(spec.search_space[n] for n in names))]
    if spec.search == "random" and len(grid) > spec.n_trials:
        grid = random.Random(spec.seed).sample(grid, spec.n_trials)
    trials = [{**spec.params, **candidate} for candidate in grid] or [dict(spec.params)]
    for params in trials:
        make_estimator(spec.estimator, params)
    return trials


def feature_columns(frame: pd.DataFrame, target: str, spec: TrainingSpec) -> list[str]:
    """Return the feature columns: everything but the target, the time column and exclusions."""
    import pandas as pd

    drop = {target, *(spec.exclude_columns or [])}
    if spec.time_column:
        drop.add(spec.time_column)
    return [c for c in frame.columns if c not in drop and not pd.api.types.is_datetime64_any_dtype(frame[c])]


def build_pipeline(estimator: Any, frame: pd.DataFrame, features: list[str]) -> Any:
    """Wrap an estimator with standard preprocessing for mixed numeric / categorical columns.

    Numeric: median imputation and scaling. Categorical: most-frequent imputation and
    one-hot encoding that ignores unseen categories at prediction time.
    """
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    types = pd.api.types
    numeric = [c for c in features if types.is_numeric_dtype(frame[c]) and not types.is_bool_dtype(frame[c])]
    categorical = [c for c in features if c not in numeric]
    pre = ColumnTransformer(
        [
            ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                              ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]), categorical),
        ]
    )
    return Pipeline([("preprocess", pre), ("model", estimator)])


def _split_dir(output_dir: str, dataset_file: str, spec: TrainingSpec) -> Path:
    return Path(output_dir) / f"{Path(dataset_file).stem}-{spec.fingerprint()}"


def split_files_exist(dataset_file: str, spec: TrainingSpec, output_dir: str) -> bool:
    """Whether the files a cached split names are still on disk (else refresh the cache)."""
    folder = _split_dir(output_dir, dataset_file, spec)
    return all((folder / f"{name}.parquet").is_file() for name in ("train", "valid", "test"))


def _split_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    spec: TrainingSpec = parameters["spec"]
    return f"split-{Path(parameters['dataset_file']).stem}-{parameters['target']}-{spec.fingerprint()}"


@task(name="split-dataset", cache_key_fn=_split_cache_key, persist_result=True)
def split_dataset(dataset_file: str, target: str, spec: TrainingSpec, output_dir: str) -> SplitFiles:
    """Split a dataset into train / validation / test Parquet files.

    ``random`` shuffles, ``stratified`` keeps the class shares, ``time`` puts the newest
    rows in test (then validation), as a model meets the future in production.

    Args:
        dataset_file: Local dataset file; its name is the data hash (from ``pull_dataset``).
        target: Target column.
        spec: The training spec (split strategy, sizes, seed).
        output_dir: Folder for the split files.

    Returns:
        Paths of the three files, their row counts and the feature columns.

    Raises:
        TrainingConfigError: If the split cannot be made (e.g. no time column).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def prepare(path: str) -> SplitFiles:
        ...     return split_dataset(path, "churned", TrainingSpec(split="time"), "/tmp/splits")
    """
    from sklearn.model_selection import train_test_split

    frame = read_frame(dataset_file)
    stratify = spec.split == "stratified" and spec.task_type == "classification"
    if spec.split == "time":
        if not spec.time_column or spec.time_column not in frame.columns:
            raise TrainingConfigError(f"Time split needs a time column; {spec.time_column!r} is not in the data.")
        frame = frame.sort_values(spec.time_column, kind="stable").reset_index(drop=True)
        n_test = int(len(frame) * spec.test_size)
        n_valid = int((len(frame) - n_test) * spec.valid_size)
        train = frame.iloc[: len(frame) - n_test - n_valid]
        valid = frame.iloc[len(frame) - n_test - n_valid: len(frame) - n_test]
        test = frame.iloc[len(frame) - n_test:]
    else:
        try:
            rest, test = train_test_split(frame, test_size=spec.test_size, random_state=spec.seed,
                                          stratify=frame[target] if stratify else None)
            train, valid = train_test_split(rest, test_size=spec.valid_size, random_state=spec.seed,
                                            stratify=rest[target] if stratify else None)
        except ValueError as exc:
            raise TrainingConfigError(f"Cannot split {dataset_file} ({spec.split}): {exc}") from exc
    out = _split_dir(output_dir, dataset_file, spec)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        paths[name] = str(out / f"{name}.parquet")
        part.to_parquet(paths[name], index=False)
    features = feature_columns(frame, target, spec)
    run_logger().info("Split %s: %d / %d / %d rows", Path(dataset_file).name, len(train), len(valid), len(test))
    return SplitFiles(**paths, rows={"train": len(train), "valid": len(valid), "test": len(test)}, features=features)


def score_predictions(task_type: str, y_true: Any, y_pred: Any, y_score: Any | None = None) -> dict[str, float]:
    """Compute the standard metrics of a classifier or regressor.

    Args:
        task_type: ``classification`` or ``regression``.
        y_true: True values.
        y_pred: Predictions.
        y_score: Positive-class probabilities (binary classifiers).

    Returns:
        Metric name -> value.
    """
    import numpy as np
    from sklearn import metrics as m

    if task_type == "regression":
        return {
            "rmse": float(np.sqrt(m.mean_squared_error(y_true, y_pred))),
            "mae": float(m.mean_absolute_error(y_true, y_pred)),
            "r2": float(m.r2_score(y_true, y_pred)),
        }
    average = "binary" if len(set(y_true)) <= 2 else "macro"
    out = {
        "accuracy": float(m.accuracy_score(y_true, y_pred)),
        "f1": float(m.f1_score(y_true, y_pred, average=average, zero_division=0)),
        "precision": float(m.precision_score(y_true, y_pred, average=average, zero_division=0)),
        "recall": float(m.recall_score(y_true, y_pred, average=average, zero_division=0)),
    }
    if y_score is not None and len(set(y_true)) == 2:
        out["roc_auc"] = float(m.roc_auc_score(y_true, y_score))
        out["log_loss"] = float(m.log_loss(y_true, np.clip(y_score, 1e-15, 1 - 1e-15)))
    return out


def positive_scores(model: Any, features: pd.DataFrame) -> np.ndarray | None:
    """Return the positive-class probability of a binary classifier, or None."""
    if hasattr(model, "predict_proba"):
        try:
            proba = model.predict_proba(features)
        except (AttributeError, NotImplementedError):
            return None
        if proba.ndim == 2 and proba.shape[1] == 2:
            return proba[:, 1]
    return None


def _trial_key(split: SplitFiles, target: str, spec: TrainingSpec, params: dict[str, Any]) -> str:
    payload = json.dumps([split.train, target, spec.estimator, params, spec.seed, spec.task_type],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def trial_models_exist(split: SplitFiles, target: str, spec: TrainingSpec, trials: list[dict[str, Any]],
                       model_dir: str) -> bool:
    """Whether the models cached trials name are still on disk (else refresh the cache)."""
    return all((Path(model_dir) / f"{_trial_key(split, target, spec, p)}.joblib").is_file() for p in trials)


def _trial_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return "trial-" + _trial_key(parameters["split"], parameters["target"], parameters["spec"], parameters["params"])


@task(name="train-trial", cache_key_fn=_trial_cache_key, persist_result=True,
      task_run_name="train-trial-{trial}")
def train_trial(split: SplitFiles, target: str, spec: TrainingSpec, params: dict[str, Any], trial: int,
                model_dir: str) -> TrialResult:
    """Fit one trial (preprocessing + estimator) and score it on the validation split.

    Cached on the data hash, estimator, parameters and seed: a retried pipeline reuses it.
    Never retried (training is not idempotent I/O).

    Args:
        split: The split files.
        target: Target column.
        spec: The training spec.
        params: This trial's parameters.
        trial: Trial number (for names).
        model_dir: Folder for the fitted model.

    Returns:
        The trial's parameters, validation metrics and model path.

    Raises:
        TrainingConfigError: If the estimator rejects its parameters or the data.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def tune(split: SplitFiles) -> list[TrialResult]:
        ...     spec = TrainingSpec()
        ...     trials = expand_trials(spec)
        ...     return train_trial.map(split, "churned", spec, trials, range(len(trials)), "/tmp/models").result()
    """
    import joblib

    logger = run_logger()
    train = read_frame(split.train)
    valid = read_frame(split.valid)
    estimator = make_estimator(spec.estimator, params)
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=spec.seed)
    pipeline = build_pipeline(estimator, train, split.features)
    started = time.perf_counter()
    try:
        pipeline.fit(train[split.features], train[target])
    except (ValueError, TypeError) as exc:
        raise TrainingConfigError(f"Trial {trial} ({spec.estimator} {params}) failed to fit: {exc}") from exc
    fit_seconds = time.perf_counter() - started
    metrics = score_predictions(spec.task_type, valid[target], pipeline.predict(valid[split.features]),
                                positive_scores(pipeline, valid[split.features]))
    path = Path(model_dir) / f"{_trial_key(split, target, spec, params)}.joblib"
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, path)
    logger.info("Trial %d %s: %s (%.2fs)", trial, params, {k: round(v, 4) for k, v in metrics.items()}, fit_seconds)
    return TrialResult(trial=trial, params=params, metrics=metrics, model_path=str(path), fit_seconds=fit_seconds)


@task(name="select-best-trial", cache_policy=NO_CACHE)
def select_best_trial(trials: list[TrialResult], metric: str) -> TrialResult:
    """Pick the trial with the best validation metric.

    Args:
        trials: Finished trials.
        metric: Metric to compare (lower is better for error metrics).

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
        raise TrainingConfigError(f"No trial reports metric {metric!r}; available: {sorted(trials[0].metrics)}")
    sign = 1 if metric in LOWER_IS_BETTER else -1
    return min(scored, key=lambda t: (sign * t.metrics[metric], t.trial))
