"""The Evidently HTML report a person opens: a header, the drift widgets, and model quality when labels exist.

:func:`report_html` renders one standalone Evidently page from

1. a header: which model and version, which reference data (its DVC rev), which window, how many
   rows on each side, and the verdict (Evidently ``counter`` / ``table`` widgets, so the page keeps
   Evidently's look);
2. the prediction's distribution as *shares* of each window (the reference and a day of traffic
   differ in size, so Evidently's count histograms are not comparable side by side);
3. a classification or regression quality section (Evidently's ``ClassificationPreset`` /
   ``RegressionPreset``) on the window's labelled rows, when ground truth has arrived;
4. the drift report's own widgets (:func:`tasks.evidently_drift.compute_drift`).

Evidently is imported inside the functions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tasks.monitoring_effects import EFFECT_SIZE, format_p_value

if TYPE_CHECKING:
    import pandas as pd

    from tasks.evidently_drift import DriftSummary

_log = logging.getLogger(__name__)

#: Header keys shown first, in this order (any other key of the header follows).
HEADER_KEYS = ("model", "version", "reference data rev", "window", "reference rows", "current rows",
               "labelled rows", "verdict")


def quality_snapshot(frame: pd.DataFrame, task_type: str, label: str = "label", prediction: str = "prediction",
                     score: str | None = "score", positive_label: Any = None) -> Any:
    """Run Evidently's classification or regression preset on the labelled rows of a window.

    Args:
        frame: Window rows (label, prediction and, for binary, score columns).
        task_type: ``binary``, ``multiclass`` or ``regression``.
        label: Ground-truth column (rows without it are left out).
        prediction: Predicted label / value column.
        score: Binary: the positive label's probability column, if logged.
        positive_label: Binary: the positive label.

    Returns:
        The Evidently snapshot, or None when no row is labelled or the preset fails (logged).

    Examples:
        >>> snapshot = quality_snapshot(window_frame, "binary", positive_label=1)  # doctest: +SKIP
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    if label not in frame.columns or prediction not in frame.columns:
        return None
    rows = frame.loc[frame[label].notna() & frame[prediction].notna()].copy()
    if rows.empty:
        return None
    if task_type == "regression":
        definition = DataDefinition(numerical_columns=[label, prediction],
                                    regression=[Regression(target=label, prediction=prediction)])
        preset: Any = RegressionPreset()
        numbers = []
    else:
        from blocks.task_metrics import plain_label
        from tasks.monitoring_performance import as_text

        # Labels as text, the way performance monitoring compares them (1, 1.0 and "1" are one class).
        rows[label], rows[prediction] = as_text(rows[label]), as_text(rows[prediction])
        if task_type == "binary":
            use_score = bool(score) and score in rows.columns and rows[score].notna().all()
            pos = (str(plain_label(positive_label)) if positive_label is not None
                   else sorted(set(rows[label]) | set(rows[prediction]))[-1])
            task: Any = BinaryClassification(target=label, prediction_labels=prediction, pos_label=pos,
                                             prediction_probas=score if use_score else None)
            numbers = [score] if use_score else []
        else:
            task, numbers = MulticlassClassification(target=label, prediction_labels=prediction), []
        definition = DataDefinition(categorical_columns=[label, prediction], numerical_columns=numbers,
                                    classification=[task])
        preset = ClassificationPreset()
    try:
        return Report([preset]).run(Dataset.from_pandas(rows[[label, prediction, *numbers]],
                                                        data_definition=definition), None)
    except Exception as exc:  # noqa: BLE001 - the drift report must still be written
        _log.warning("No quality section in the report: Evidently's %s preset failed on %s labelled rows: %s",
                     type(preset).__name__, len(rows), exc)
        return None


def _header_widgets(header: dict[str, str], summary: DriftSummary) -> list[Any]:
    from evidently.legacy.renderers.html_widgets import table_data

    ordered = {k: header[k] for k in HEADER_KEYS if k in header} | {k: v for k, v in header.items()
                                                                      if k not in HEADER_KEYS}
    ordered["why this verdict"] = (f"{len(summary.drifted_columns)} of {len(summary.column_scores)} columns drifted "
                                   f"({summary.drift_share:.0%}); the dataset drifts at >= "
                                   f"{summary.drift_share_threshold:.0%} of its columns")
    title = f"{header.get('model', 'model')} v{header.get('version', '?')}: monitoring report"
    widgets = [table_data(title=title, column_names=["", ""], data=[[k, str(v)] for k, v in ordered.items()])]
    if summary.prediction_shares:
        name = summary.prediction_column or "prediction"
        effect = summary.column_effects.get(name)
        widgets.append(table_data(
            title=f"Prediction '{name}': share of each window (not counts: the windows differ in size); "
                  f"p-value {format_p_value(summary.prediction_score)}, {EFFECT_SIZE} "
                  + ("-" if effect is None else f"{effect:.3f}"),
            column_names=[name, "reference share", "current share", "change"],
            data=[[row["value"], f"{row['reference_share']:.1%}", f"{row['current_share']:.1%}",
                   f"{row['current_share'] - row['reference_share']:+.1%}"] for row in summary.prediction_shares]))
    return widgets


def report_html(snapshot: Any, summary: DriftSummary, header: dict[str, str] | None = None,
                quality: Any = None) -> str:
    """Render one standalone HTML page: header, prediction shares, drift widgets, quality section.

    Args:
        snapshot: The drift report's Evidently snapshot.
        summary: Its summary (verdict, shares, prediction shares).
        header: What the report describes (model, version, reference data rev, window, row counts).
        quality: Snapshot of :func:`quality_snapshot`, or None.

    Returns:
        The HTML text.

    Examples:
        >>> html = report_html(result.snapshot, result.summary, {"model": "churn", "version": "3"})  # doctest: +SKIP
    """
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget

    # Snapshot.get_html_str renders [group(_widgets)] + _tests_widgets; the same, with our sections around it.
    widgets = [group_widget(title="What this report describes", widgets=_header_widgets(header or {}, summary))]
    if quality is not None:  # before the long per-column drift and data-quality widgets
        widgets.append(group_widget(title="Model quality on the labelled rows of the window",
                                    widgets=list(quality._widgets)))  # noqa: SLF001
    widgets.append(group_widget(title="Data drift and data quality", widgets=list(snapshot._widgets)))  # noqa: SLF001
    widgets.extend(snapshot._tests_widgets)  # noqa: SLF001
    return render_widgets(widgets, as_iframe=False)


def drift_table(summary: DriftSummary) -> list[dict[str, str]]:
    """Rows of the drift table a person reads: most drifted first, the prediction included.

    One row per tested column and one for the prediction (``role`` says which; the prediction does
    not count in the dataset-drift share). Columns: the test and its score (a p-value for ``ks`` /
    ``chisquare``, in scientific notation, never a bare 0; a distance for ``wasserstein`` / ``psi``),
    the threshold it was held to, the effect size (PSI, :mod:`tasks.monitoring_effects`) and its
    reading. Sorted by drifted first, then by effect size, largest first.

    Examples:
        >>> [row["column"] for row in drift_table(summary)]  # doctest: +SKIP
        ['monthly_charges', 'usage_gb', 'prediction', 'tenure_months']
    """
    from tasks.monitoring_effects import psi_reading

    names = [(c, "feature") for c in summary.column_scores]
    if summary.prediction_column and summary.prediction_score is not None:
        names.append((summary.prediction_column, "prediction"))
    rows = []
    for column, role in names:
        is_prediction = role == "prediction"
        drifted = bool(summary.prediction_drift) if is_prediction else column in summary.drifted_columns
        method = summary.prediction_method if is_prediction else summary.column_methods.get(column)
        threshold = summary.prediction_threshold if is_prediction else summary.column_thresholds.get(column)
        score = summary.prediction_score if is_prediction else summary.column_scores.get(column)
        effect = summary.column_effects.get(column)
        rows.append((not drifted, -(effect if effect is not None else -1.0), {
            "column": column, "role": role, "drifted": "yes" if drifted else "no", "test": method or "-",
            "score": format_p_value(score), "threshold": format_p_value(threshold) if threshold else "method default",
            f"effect size ({EFFECT_SIZE})": "-" if effect is None else f"{effect:.3f}",
            "reading": psi_reading(effect)}))
    return [row for *_, row in sorted(rows, key=lambda item: (item[0], item[1], item[2]["column"]))]
