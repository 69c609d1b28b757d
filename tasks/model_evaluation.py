"""Evaluate a model on held-out data: metrics, per-slice metrics, fairness, plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.exceptions import TrainingConfigError
from tasks.logs import run_logger
from tasks.sample_data import read_frame
from tasks.sklearn_training import positive_scores, score_predictions

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd


class Evaluation(BaseModel):
    """Metrics of one model on one test set."""

    model: str
    rows: int
    metrics: dict[str, float]
    slice_metrics: dict[str, dict[str, dict[str, float]]] = {}
    slice_gaps: dict[str, float] = {}
    fairness: dict[str, Any] = {}
    plots: list[str] = []


def load_model(model_path: str) -> Any:
    """Load a model from a joblib file or an MLflow model folder."""
    path = Path(model_path)
    if path.is_dir():
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(path))
    import joblib

    return joblib.load(path)


def _slice_table(task_type: str, frame: pd.DataFrame, target: str, pred: np.ndarray, score: np.ndarray | None,
                 column: str, metric: str, min_rows: int) -> tuple[dict[str, dict[str, float]], float]:
    table: dict[str, dict[str, float]] = {}
    for value, idx in frame.groupby(column, observed=True, dropna=False).indices.items():
        y = frame[target].to_numpy()[idx]
        if task_type == "classification" and len(set(y)) < 2:
            continue
        row = score_predictions(task_type, y, pred[idx], None if score is None else score[idx])
        row["rows"] = float(len(idx))
        table[str(value)] = row
    gated = [r[metric] for r in table.values() if r["rows"] >= min_rows and metric in r]
    return table, float(max(gated) - min(gated)) if len(gated) >= 2 else 0.0


def _fairness(task_type: str, frame: pd.DataFrame, target: str, pred: np.ndarray, column: str) -> dict[str, Any]:
    import numpy as np
    groups: dict[str, dict[str, float]] = {}
    y_all = frame[target].to_numpy()
    for value, idx in frame.groupby(column, observed=True, dropna=False).indices.items():
        y, p = y_all[idx], pred[idx]
        if task_type == "classification":
            positives = y == 1
            groups[str(value)] = {
                "rows": float(len(idx)),
                "positive_rate": float(np.mean(p == 1)),
                "true_positive_rate": float(np.mean(p[positives] == 1)) if positives.any() else float("nan"),
            }
        else:
            groups[str(value)] = {"rows": float(len(idx)), "mae": float(np.mean(np.abs(y - p)))}
    if task_type == "classification":
        rates = [g["positive_rate"] for g in groups.values()]
        tprs = [g["true_positive_rate"] for g in groups.values() if not np.isnan(g["true_positive_rate"])]
        return {"attribute": column, "groups": groups,
                "demographic_parity_difference": float(max(rates) - min(rates)) if rates else 0.0,
                "equal_opportunity_difference": float(max(tprs) - min(tprs)) if tprs else 0.0,
                "disparity": float(max(rates) - min(rates)) if rates else 0.0}
    maes = [g["mae"] for g in groups.values()]
    return {"attribute": column, "groups": groups, "disparity": float(max(maes) - min(maes)) if maes else 0.0}


def _plots(task_type: str, model: Any, frame: pd.DataFrame, target: str, pred: np.ndarray,
           score: np.ndarray | None, plot_dir: Path) -> list[str]:
    # Figure objects, not pyplot: pyplot's global state is not thread-safe.
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    plot_dir.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []

    def save(fig: Figure, name: str) -> None:
        path = plot_dir / name
        fig.savefig(path, dpi=80, bbox_inches="tight")
        paths.append(str(path))

    y = frame[target].to_numpy()
    if task_type == "classification":
        fig = Figure(figsize=(4, 4))
        ConfusionMatrixDisplay.from_predictions(y, pred, ax=fig.subplots(), colorbar=False)
        save(fig, "confusion_matrix.png")
        if score is not None:
            fig = Figure(figsize=(4, 4))
            RocCurveDisplay.from_predictions(y, score, ax=fig.subplots())
            save(fig, "roc_curve.png")
            fig = Figure(figsize=(4, 4))
            PrecisionRecallDisplay.from_predictions(y, score, ax=fig.subplots())
            save(fig, "pr_curve.png")
    else:
        fig = Figure(figsize=(5, 4))
        ax = fig.subplots()
        ax.scatter(pred, y - pred, s=4, alpha=0.4)
        ax.axhline(0, color="grey")
        ax.set_xlabel("prediction")
        ax.set_ylabel("residual")
        save(fig, "residuals.png")
    importance = _feature_importance(model)
    if importance is not None:
        top = importance.abs().sort_values().tail(15)
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.barh(top.index, top.values)
        ax.set_title("feature importance")
        save(fig, "feature_importance.png")
    return paths


def _feature_importance(model: Any) -> pd.Series | None:
    import numpy as np
    import pandas as pd
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    values = getattr(final, "feature_importances_", None)
    if values is None and hasattr(final, "coef_"):
        values = np.abs(np.ravel(final.coef_)) if np.ndim(final.coef_) == 1 or final.coef_.shape[0] == 1 else None
    if values is None:
        return None
    try:
        names = model[:-1].get_feature_names_out()
    except (AttributeError, TypeError, ValueError, IndexError):
        names = [f"f{i}" for i in range(len(values))]
    if len(names) != len(values):
        return None
    return pd.Series(values, index=list(names))


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(model_path: str, test_file: str, target: str, task_type: str, features: list[str],
                   slice_columns: list[str] | None = None, sensitive_attribute: str | None = None,
                   primary_metric: str = "roc_auc", min_slice_rows: int = 30,
                   plot_dir: str | None = None, label: str = "challenger") -> Evaluation:
    """Evaluate a model on a test file: metrics, per-slice metrics and gaps, fairness, plots.

    Args:
        model_path: A joblib file or an MLflow model folder.
        test_file: Local Parquet / CSV test data.
        target: Target column.
        task_type: ``classification`` or ``regression``.
        features: Feature columns the model takes.
        slice_columns: Columns to slice by.
        sensitive_attribute: Column for fairness disparity.
        primary_metric: Metric compared across slices.
        min_slice_rows: Slices smaller than this do not count towards the gap.
        plot_dir: Where to write plots (none when empty).
        label: Name of the model in logs (``challenger``, ``champion``).

    Returns:
        The evaluation.

    Raises:
        TrainingConfigError: If the model cannot score the test data (e.g. columns differ).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def check(model: str, test: str) -> float:
        ...     evaluation = evaluate_model(model, test, "churned", "classification", ["tenure_months"])
        ...     return evaluation.metrics["roc_auc"]
    """
    import numpy as np

    logger = run_logger()
    frame = read_frame(test_file)
    model = load_model(model_path)
    try:
        x = frame[features]
        pred = np.asarray(model.predict(x))
        score = positive_scores(model, x) if task_type == "classification" else None
    except (KeyError, ValueError, TypeError) as exc:
        raise TrainingConfigError(f"The {label} model {model_path} cannot score {test_file}: {exc}") from exc
    metrics = score_predictions(task_type, frame[target].to_numpy(), pred, score)
    slices: dict[str, dict[str, dict[str, float]]] = {}
    gaps: dict[str, float] = {}
    for column in slice_columns or []:
        if column in frame.columns:
            slices[column], gaps[column] = _slice_table(task_type, frame, target, pred, score, column,
                                                        primary_metric, min_slice_rows)
    fairness = (_fairness(task_type, frame, target, pred, sensitive_attribute)
                if sensitive_attribute and sensitive_attribute in frame.columns else {})
    plots = _plots(task_type, model, frame, target, pred, score, Path(plot_dir)) if plot_dir else []
    logger.info("%s on %d test rows: %s", label, len(frame), {k: round(v, 4) for k, v in metrics.items()})
    return Evaluation(model=label, rows=len(frame), metrics=metrics, slice_metrics=slices, slice_gaps=gaps,
                      fairness=fairness, plots=plots)
