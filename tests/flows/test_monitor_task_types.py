"""monitor-model on a regression champion with an event-time column (statsmodels macrodata), real servers.

The champion is trained by the real continuous-training flow; its ``mlops.task_type`` and
``mlops.time_column`` tags are set as the training side records them. Traffic is scored by the
real model and logged by the real inference-log writer, with the date as a passthrough column.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from blocks.monitoring_policy import MonitoringPolicy
from blocks.promotion_policy import PromotionPolicy
from blocks.settings import state_dir
from flows.continuous_training import continuous_training
from flows.monitor_model import monitor_model
from tasks.exceptions import MonitoringError
from tasks.inference_log import InferenceLogWriter, attach_ground_truth
from tasks.model_evaluation import load_model
from tasks.sklearn_training import TrainingSpec

MODEL = "mon-macro"
#: 1990-01-01 .. 2000-01-01: ten years with two leap days, exactly 40 quarters.
DECADE_HOURS = 3652 * 24


def macro_frame() -> pd.DataFrame:
    import statsmodels.api as sm

    frame = sm.datasets.macrodata.load_pandas().data
    frame["date"] = [f"{int(y)}-{3 * int(q) - 2:02d}-01" for y, q in zip(frame["year"], frame["quarter"], strict=True)]
    return frame[["date", "realgdp", "realcons", "unemp", "infl", "realinv"]]


@pytest.fixture(scope="module")
def champion(mlflow_block_name: str, mlflow_server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("macro")
    frame = macro_frame()
    data = folder / "macro.parquet"
    frame.to_parquet(data, index=False)
    PromotionPolicy(primary_metric="rmse", direction="minimize", floors={}, guard_metrics={}).save(
        "mon-regression-gate", overwrite=True)
    summary = continuous_training(
        data_file=str(data), model_name=MODEL, target="realinv", dataset_path=f"data/{MODEL}.parquet",
        mlflow_block=mlflow_block_name, policy_block="mon-regression-gate",
        training=TrainingSpec(task_type="regression", estimator="sklearn.linear_model.Ridge", params={},
                              search_space={"alpha": [1.0]}, split="random", time_column="date"))
    assert summary.promoted, summary
    client = MlflowClient(tracking_uri=mlflow_server.url)
    # What the training side records on every version (shared contract 2).
    client.set_model_version_tag(MODEL, summary.model_version, "mlops.task_type", "regression")
    client.set_model_version_tag(MODEL, summary.model_version, "mlops.time_column", "date")
    version = client.get_model_version(MODEL, summary.model_version)
    from blocks.mlflow_server import MlflowServer
    from tasks.mlflow_registry import download_model_version, version_info

    # MLflow 3: the model is a LoggedModel, not an artifact folder of the run.
    model_dir = download_model_version.fn(MlflowServer.load(mlflow_block_name), version_info(version),
                                          str(folder / "model"))
    features = json.loads(version.tags["mlops.features"])
    assert "date" not in features and "mlops.test_metrics" in version.tags

    # Every quarter 1959-2009 scored "now", arrivals in an order unrelated to the event time; all labelled.
    log_dir = folder / "ilog"
    model = load_model(model_dir)
    ids = [str(uuid.uuid4()) for _ in range(len(frame))]
    now = dt.datetime.now(dt.UTC).timestamp()
    writer = InferenceLogWriter(log_dir, MODEL, summary.model_version, start_thread=False)
    writer.log(ids, [now - 60 + ((i * 37) % len(ids)) * 1e-3 for i in range(len(ids))], frame[features + ["date"]],
               model.predict(frame[features]).tolist())
    assert writer.flush() == len(ids)
    attach_ground_truth(log_dir, MODEL, dict(zip(ids, frame["realinv"].tolist(), strict=True)))
    MonitoringPolicy(min_window_rows=30, min_labeled_rows=30).save("mon-small-windows", overwrite=True)
    return {"version": summary.model_version, "log_dir": str(log_dir), "frame": frame}


def test_event_time_window_gets_a_regression_performance_verdict(champion: dict, mlflow_block_name: str) -> None:
    summary = monitor_model(model_name=MODEL, window_hours=DECADE_HOURS, window_end="2000-01-01T00:00:00+00:00",
                            mlflow_block=mlflow_block_name, monitoring_block="mon-small-windows",
                            log_dir=champion["log_dir"])
    assert (summary.task_type, summary.time_basis, summary.time_column) == ("regression", "event", "date")
    assert summary.rows == 40 and summary.labeled_rows == 40, summary.render()
    perf = summary.performance
    assert perf is not None and perf.primary_metric == "rmse" and perf.verdict in {"ok", "decayed"}
    assert perf.decay_rule == "relative increase" and {"rmse", "mae", "r2"} == set(perf.metrics)
    assert summary.drift is not None and summary.drift.verdict in {"drift", "no_drift"}
    html = Path(summary.report_html).read_text()  # the report's regression-quality section
    assert "Model quality on the labelled rows of the window" in html and "Regression" in html
    assert summary.drift.current_rows == 40 and "date" not in summary.drift.column_scores
    assert "by event time 'date'" in summary.render() and "rmse" in summary.render()


def test_not_enough_data_names_each_unmet_condition(champion: dict, mlflow_block_name: str) -> None:
    summary = monitor_model(model_name=MODEL, window_hours=730 * 24, window_end="1992-01-01T00:00:00+00:00",
                            mlflow_block=mlflow_block_name, log_dir=champion["log_dir"])
    assert summary.verdict == "not_enough_data" and summary.rows == 8 and summary.events == []
    text = summary.render()
    assert "the current window has 8 rows, fewer than min_window_rows=200" in text
    assert "all 8 rows are labelled, fewer than min_labeled_rows=200" in text
    assert "no labels yet" not in text


def test_policy_metric_the_task_cannot_report_is_refused_before_any_work(champion: dict,
                                                                         mlflow_block_name: str) -> None:
    MonitoringPolicy(primary_metric="roc_auc").save("mon-auc", overwrite=True)
    with pytest.raises(MonitoringError, match="names 'roc_auc', which a regression model does not report"):
        monitor_model(model_name=MODEL, window_hours=24, window_end="1998-01-01T00:00:00+00:00",
                      mlflow_block=mlflow_block_name, monitoring_block="mon-auc", log_dir=champion["log_dir"])
    assert not (state_dir() / "reports" / MODEL / "19980101T000000").exists(), "no work was done"
