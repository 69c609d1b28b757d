"""Plots of an evaluation that a person can read: 1200x900 px, titled with model, version and data rev.

The numbers behind every plot (curve points, the normalised confusion matrix, importances, a
sample of predictions) travel in :class:`PlotData` on the evaluation, so the plots can be drawn
again once the registry version and the champion are known (``tasks.mlflow_pages``), with the
champion's ROC and PR curves overlaid. Figure objects, never pyplot: pyplot's global state is
not thread-safe and Prefect runs tasks in threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

#: 8 x 6 inches at 150 dpi: 1200 x 900 px.
FIGSIZE, DPI = (8.0, 6.0), 150
#: Points kept per curve and predictions kept for regression plots (the evaluation stays small).
MAX_POINTS = 300
TOP_FEATURES = 20


class PlotData(BaseModel):
    """The numbers behind the plots of one evaluation (small: curves and samples are thinned)."""

    roc: dict[str, list[float]] = {}
    roc_auc: float | None = None
    pr: dict[str, list[float]] = {}
    average_precision: float | None = None
    confusion_labels: list[str] = []
    confusion: list[list[float]] = []
    importance: dict[str, float] = {}
    importance_std: dict[str, float] = {}
    coefficients: dict[str, float] = {}
    predicted: list[float] = []
    actual: list[float] = []


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    import numpy as np

    n = len(arrays[0])
    idx = np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).astype(int)) if n else np.array([], dtype=int)
    return [[round(float(v), 5) for v in np.asarray(a)[idx]] for a in arrays]


def original_name(name: str) -> str:
    """Return a transformed column's name without the ColumnTransformer prefix (``num__age`` -> ``age``).

    Examples:
        >>> original_name("num__tenure_months"), original_name("cat__plan_basic"), original_name("age")
        ('tenure_months', 'plan_basic', 'age')
    """
    return name.split("__", 1)[1] if "__" in name else name


def signed_coefficients(model: Any) -> dict[str, float]:
    """Return a linear model's signed coefficients by (prefix-free) feature name; {} for other models."""
    import numpy as np

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    coef = getattr(final, "coef_", None)
    if coef is None or not (np.ndim(coef) == 1 or np.shape(coef)[0] == 1):
        return {}
    values = np.ravel(coef)
    try:
        names = [original_name(str(n)) for n in model[:-1].get_feature_names_out()]
    except (AttributeError, TypeError, ValueError, IndexError):
        names = [f"f{i}" for i in range(len(values))]
    return dict(zip(names, (float(v) for v in values), strict=False)) if len(names) == len(values) else {}


def permutation_scores(model: Any, x: pd.DataFrame, y: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Return the permutation importance (mean, std) of each ORIGINAL input column on the test split."""
    import numpy as np
    from sklearn.inspection import permutation_importance

    idx = np.sort(np.random.default_rng(0).permutation(len(x))[:2000])
    sample, target = x.iloc[idx], np.asarray(y)[idx]
    try:
        result = permutation_importance(model, sample, target, n_repeats=5, random_state=0, n_jobs=1)
    except (ValueError, TypeError):  # a model whose score() cannot take these rows: no plot, not a failure
        return {}, {}
    names = [str(c) for c in sample.columns]
    return ({n: float(v) for n, v in zip(names, result.importances_mean, strict=True)},
            {n: float(v) for n, v in zip(names, result.importances_std, strict=True)})


def collect_plot_data(task_type: str, model: Any, x: pd.DataFrame, y: np.ndarray, pred: np.ndarray,
                      score: np.ndarray | None, truth: np.ndarray | None, importance: bool = True) -> PlotData:
    """Compute the numbers behind the plots (``truth``: boolean positive labels of a binary task).

    ``importance=False`` skips the permutation importance (a few predictions per column).
    """
    import numpy as np
    from sklearn.metrics import auc, average_precision_score, confusion_matrix, precision_recall_curve, roc_curve

    data = PlotData()
    if task_type != "regression":
        labels = sorted({str(v) for v in y} | {str(v) for v in pred})
        matrix = confusion_matrix([str(v) for v in y], [str(v) for v in pred], labels=labels, normalize="true")
        data.confusion_labels, data.confusion = labels, [[round(float(v), 4) for v in row] for row in matrix]
        if score is not None and truth is not None and truth.any() and not truth.all():
            fpr, tpr, _ = roc_curve(truth, score)
            data.roc = dict(zip(("fpr", "tpr"), _thin(fpr, tpr), strict=True))
            data.roc_auc = float(auc(fpr, tpr))
            precision, recall, _ = precision_recall_curve(truth, score)
            data.pr = dict(zip(("recall", "precision"), _thin(recall, precision), strict=True))
            data.average_precision = float(average_precision_score(truth, score))
    else:
        idx = np.random.default_rng(0).permutation(len(y))[:2000]
        data.predicted = [round(float(v), 5) for v in np.asarray(pred, dtype=float)[idx]]
        data.actual = [round(float(v), 5) for v in np.asarray(y, dtype=float)[idx]]
    if importance:
        data.importance, data.importance_std = permutation_scores(model, x, np.asarray(y))
        data.coefficients = signed_coefficients(model)
    return data


def render_plots(data: PlotData, plot_dir: str | Path, title: str, champion: PlotData | None = None,
                 champion_name: str = "champion") -> list[str]:
    """Draw the plots of ``data`` into ``plot_dir`` (champion curves overlaid when given) and return their paths."""
    from matplotlib.figure import Figure

    out = Path(plot_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []

    def figure(name: str, subtitle: str) -> tuple[Figure, Any]:
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        ax = fig.subplots()
        fig.suptitle(title, fontsize=11)
        ax.set_title(subtitle, fontsize=10)
        return fig, ax

    def save(fig: Figure, name: str) -> None:
        fig.savefig(out / name, dpi=DPI)  # no bbox_inches="tight": the size stays 1200 x 900
        paths.append(str(out / name))

    if data.confusion:
        fig, ax = figure("confusion", "confusion matrix, normalised by true label (row sums = 1)")
        image = ax.imshow(data.confusion, cmap="Blues", vmin=0.0, vmax=1.0)
        ticks = range(len(data.confusion_labels))
        ax.set_xticks(list(ticks), data.confusion_labels, rotation=45 if len(ticks) > 4 else 0)
        ax.set_yticks(list(ticks), data.confusion_labels)
        ax.set_xlabel("predicted label")
        ax.set_ylabel("true label")
        for i, row in enumerate(data.confusion):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.5 else "black")
        fig.colorbar(image, ax=ax, label="share of the true label")
        save(fig, "confusion_matrix.png")
    for kind, x_key, y_key, score, label in (("roc", "fpr", "tpr", "roc_auc", "AUC"),
                                            ("pr", "recall", "precision", "average_precision", "AP")):
        curve = getattr(data, kind)
        if not curve:
            continue
        name = "ROC curve" if kind == "roc" else "precision-recall curve"
        fig, ax = figure(kind, name + (f" against the {champion_name}" if champion and getattr(champion, kind)
                                       else ""))
        ax.plot(curve[x_key], curve[y_key], lw=2, label=f"this model ({label} {getattr(data, score) or 0:.3f})")
        other = getattr(champion, kind) if champion else {}
        if other:
            ax.plot(other[x_key], other[y_key], lw=2, ls="--",
                    label=f"{champion_name} ({label} {getattr(champion, score) or 0:.3f})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="chance")
        ax.set_xlabel("false positive rate" if kind == "roc" else "recall")
        ax.set_ylabel("true positive rate" if kind == "roc" else "precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower right" if kind == "roc" else "lower left")
        ax.grid(alpha=0.3)
        save(fig, "roc_curve.png" if kind == "roc" else "pr_curve.png")
    if data.predicted:
        fig, ax = figure("pva", "predicted vs actual (test split)")
        ax.scatter(data.actual, data.predicted, s=6, alpha=0.4)
        low, high = min(data.actual + data.predicted), max(data.actual + data.predicted)
        ax.plot([low, high], [low, high], color="grey", ls=":", label="perfect")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.legend()
        save(fig, "predicted_vs_actual.png")
        fig, ax = figure("residuals", "residuals (actual - predicted) against the prediction")
        ax.scatter(data.predicted, [a - p for a, p in zip(data.actual, data.predicted, strict=True)], s=6, alpha=0.4)
        ax.axhline(0, color="grey")
        ax.set_xlabel("predicted")
        ax.set_ylabel("residual")
        save(fig, "residuals.png")
    for values, std, name, subtitle in (
            (data.importance, data.importance_std, "permutation_importance.png",
             "permutation importance on the test split (drop in score when a column is shuffled)"),
            (data.coefficients, {}, "coefficients.png", "signed coefficients (on scaled / encoded features)")):
        if not values:
            continue
        top = sorted(values.items(), key=lambda kv: abs(kv[1]), reverse=True)[:TOP_FEATURES][::-1]
        fig, ax = figure(name, subtitle)
        ax.barh([k for k, _ in top], [v for _, v in top], xerr=[std.get(k, 0.0) for k, _ in top] if std else None,
                color=["#c0392b" if v < 0 else "#2e86c1" for _, v in top])
        ax.axvline(0, color="grey", lw=1)
        ax.set_xlabel("drop in the model's score (accuracy for classifiers, R\u00b2 for regressors)" if std else
                      "coefficient (positive: towards the positive class / larger predictions)")
        save(fig, name)
    return paths
