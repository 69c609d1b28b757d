"""The ``monitor-model`` flow: drift, data quality and performance of the serving champion."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel

from blocks.settings import state_dir
from flows.common import (
    DEFAULT_MODEL_NAME,
    inference_log_dir,
    load_dvc,
    load_mlflow,
    load_monitoring_policy,
    model_cache_dir,
)
from tasks import lineage as L
from tasks.dvc_data import pull_dataset
from tasks.events import DATA_QUALITY_FAILED, DRIFT_DETECTED, PERFORMANCE_DECAYED, emit_model_event
from tasks.evidently_monitoring import DriftSummary, PerformanceSummary, evaluate_performance, run_drift_report
from tasks.mlflow_registry import CHAMPION, download_model_version, get_alias_version
from tasks.mlflow_tracking import log_report_files
from tasks.monitoring_data import export_inference_window, score_reference, window_bounds
from tasks.prefect_artifacts import publish_report


class MonitoringSummary(BaseModel):
    """What one monitoring run found."""

    model_name: str
    champion_version: str | None
    window_start: str
    window_end: str
    rows: int
    labeled_rows: int
    verdict: str
    drift: DriftSummary | None = None
    performance: PerformanceSummary | None = None
    events: list[str] = []
    report_html: str | None = None

    def render(self) -> str:
        """Return a readable one-paragraph summary."""
        drifted = ", ".join(self.drift.drifted_columns) if self.drift and self.drift.drifted_columns else "-"
        perf = (f"{self.performance.primary_metric} {self.performance.current_value:.4f} vs baseline "
                f"{self.performance.baseline_value:.4f}" if self.performance and self.performance.current_value
                is not None and self.performance.baseline_value is not None else "no labels yet")
        return (f"monitor {self.model_name} v{self.champion_version}: {self.verdict} on {self.rows} requests "
                f"({self.labeled_rows} labelled); drifted: {drifted}; performance: {perf}; "
                f"events: {', '.join(self.events) or '-'}")


def _verdict(drift: DriftSummary | None, performance: PerformanceSummary | None) -> str:
    if drift is not None and drift.verdict == "not_enough_data" and (performance is None or
                                                                     performance.verdict != "decayed"):
        return "not_enough_data"
    problems = []
    if drift is not None and drift.verdict == "drift":
        problems.append("drift")
    if performance is not None and performance.decayed:
        problems.append("decay")
    return "+".join(problems) or "healthy"


@flow(name="monitor-model", log_prints=True)
def monitor_model(
    model_name: str = DEFAULT_MODEL_NAME,
    window_hours: float = 24.0,
    window_end: str | None = None,
    mlflow_block: str | None = None,
    dvc_block: str | None = None,
    monitoring_block: str | None = None,
    log_dir: str | None = None,
    serving_block: str | None = None,
    emit_events: bool = True,
) -> MonitoringSummary:
    """Compare the last window of served traffic with the champion's training data.

    Computes dataset and per-column drift, prediction drift and data quality with
    Evidently, and model performance where ground truth has arrived. Saves the HTML and
    JSON reports under the state folder and on the champion's MLflow run, publishes a
    Prefect artifact, and emits drift / decay / quality events that retraining listens to.
    A breach is a result (and an event), not an error.

    Args:
        model_name: Registered model name.
        window_hours: Length of the window of logged predictions.
        window_end: End of the window, ISO 8601 (None: now).
        mlflow_block: Name of a saved ``MlflowServer`` block (None: embedded).
        dvc_block: Name of a saved ``DvcRepository`` block (None: embedded).
        monitoring_block: Name of a saved ``MonitoringPolicy`` block (None: default policy).
        log_dir: Inference log root (None: the serving block's, else the embedded default).
        serving_block: Name of the saved ``BentoMLServing`` block whose inference log to read.
        emit_events: Emit Prefect events for breaches.

    Returns:
        A :class:`MonitoringSummary`.

    Examples:
        >>> from flows.monitor_model import monitor_model
        >>> summary = monitor_model(window_hours=6)  # doctest: +SKIP
        >>> summary.verdict  # doctest: +SKIP
        'healthy'
    """
    logger = get_run_logger()
    mlflow_server = load_mlflow(mlflow_block)
    data_repo = load_dvc(dvc_block)
    policy = load_monitoring_policy(monitoring_block)
    log_dir = inference_log_dir(log_dir, serving_block)
    home = state_dir()
    start, end = window_bounds(window_hours, window_end)
    champion = get_alias_version(mlflow_server, model_name, CHAMPION)
    if champion is None:
        logger.warning("Model %s has no champion: nothing to monitor", model_name)
        return MonitoringSummary(model_name=model_name, champion_version=None, window_start=start, window_end=end,
                                 rows=0, labeled_rows=0, verdict="no_champion")

    stamp = dt.datetime.fromisoformat(end).strftime("%Y%m%dT%H%M%S")
    out_dir = home / "reports" / model_name / stamp
    reference = pull_dataset(data_repo, champion.tags[L.TAG_DATA_PATH], champion.tags[L.TAG_DATA_REV],
                             str(home / "cache" / "data"))
    model_dir = download_model_version(mlflow_server, champion, model_cache_dir(mlflow_server))
    features = json.loads(champion.tags[L.TAG_FEATURES])
    scored = score_reference(model_dir, reference, features,
                             str(home / "cache" / "reference" / f"{model_name}-v{champion.version}.parquet"))
    window = export_inference_window(log_dir, model_name, start, end, str(out_dir / "window.parquet"))
    drift = run_drift_report(scored, window.path, policy, str(out_dir), columns=features,
                             prediction_column="prediction")
    performance = None
    if window.labeled_rows:
        baseline = {k.removeprefix("test_"): v for k, v in
                    json.loads(champion.tags.get("mlops.test_metrics", "{}")).items()}
        performance = evaluate_performance(window.path, "label", "prediction", "score", baseline, policy)
    if champion.run_id:
        log_report_files(mlflow_server, champion.run_id, [drift.html_path or "", drift.json_path or ""],
                         f"monitoring/{stamp}")

    events: list[str] = []
    window_info: dict[str, Any] = {"start": start, "end": end, "rows": window.rows}
    if emit_events and drift.verdict == "drift":
        emit_model_event(DRIFT_DETECTED, model_name, {
            "drift_share": drift.drift_share, "drifted_columns": drift.drifted_columns, "window": window_info,
            "report": drift.html_path, "champion_version": champion.version})
        events.append(DRIFT_DETECTED)
    if emit_events and performance is not None and performance.decayed:
        emit_model_event(PERFORMANCE_DECAYED, model_name, {
            "metric": performance.primary_metric, "value": performance.current_value,
            "baseline": performance.baseline_value, "window": window_info, "champion_version": champion.version})
        events.append(PERFORMANCE_DECAYED)
    if emit_events and drift.quality_issues:
        emit_model_event(DATA_QUALITY_FAILED, model_name, {"issues": drift.quality_issues, "window": window_info})
        events.append(DATA_QUALITY_FAILED)

    summary = MonitoringSummary(model_name=model_name, champion_version=champion.version, window_start=start,
                                window_end=end, rows=window.rows, labeled_rows=window.labeled_rows,
                                verdict=_verdict(drift, performance), drift=drift, performance=performance,
                                events=events, report_html=drift.html_path)
    table = [{"column": c, "method": drift.column_methods.get(c), "score": round(s, 5),
              "drifted": c in drift.drifted_columns} for c, s in sorted(drift.column_scores.items())]
    publish_report(f"{model_name}-monitoring",
                   f"# {model_name} monitoring: {summary.verdict}\n\n{summary.render()}\n\n"
                   f"Evidently report: `{drift.html_path}`\n\n"
                   + "\n".join(f"- quality: {q}" for q in drift.quality_issues), table)
    print(summary.render())
    return summary
