"""monitor-model on a real champion, a real inference log and real Evidently."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client

from flows.continuous_training import continuous_training
from flows.monitor_model import monitor_model
from tasks.events import DRIFT_DETECTED
from tasks.inference_log import InferenceLogWriter, attach_ground_truth
from tasks.model_evaluation import load_model
from tasks.sample_data import make_customer_frame
from tasks.sklearn_training import TrainingSpec

MODEL = "mon-model"


def log_traffic(log_dir: Path, model_dir: str, features: list[str], version: str, n: int, drift: float,
                concept: float, day: int, labels: bool = True) -> None:
    """Log predictions of the real champion for a generated batch, and (optionally) their labels."""
    frame = make_customer_frame(n, seed=11, day=day, covariate_drift=drift, concept_drift=concept)
    model = load_model(model_dir)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    now = time.time()
    writer = InferenceLogWriter(log_dir, MODEL, version, start_thread=False)
    writer.log(ids, [now - 60 + i * 1e-3 for i in range(n)], frame[features], model.predict(frame[features]).tolist(),
               model.predict_proba(frame[features])[:, 1].tolist())
    writer.flush()
    if labels:
        attach_ground_truth(log_dir, MODEL, dict(zip(ids, frame["churned"].tolist(), strict=True)))


@pytest.fixture(scope="module")
def champion(mlflow_block_name: str, sample_dir: Path, mlflow_server) -> dict:
    summary = continuous_training(data_file=str(sample_dir / "day0.parquet"), model_name=MODEL,
                                  dataset_path=f"data/{MODEL}.parquet", mlflow_block=mlflow_block_name,
                                  training=TrainingSpec(search_space={"C": [1.0]}))
    client = MlflowClient(tracking_uri=mlflow_server.url)
    version = client.get_model_version(MODEL, summary.model_version)
    local = client.download_artifacts(summary.run_id, "model", str(Path(sample_dir) / f"{MODEL}-model"))
    return {"version": summary.model_version, "run_id": summary.run_id, "model_dir": local,
            "features": json.loads(version.tags["mlops.features"])}


def test_drifted_traffic_is_detected_reported_and_announced(champion: dict, mlflow_block_name: str,
                                                            tmp_path: Path, mlflow_server) -> None:
    log_dir = tmp_path / "ilog"
    log_traffic(log_dir, champion["model_dir"], champion["features"], champion["version"], 3000, 1.0, 1.0, day=5)
    started = dt.datetime.now(dt.UTC)
    summary = monitor_model(model_name=MODEL, window_hours=1, mlflow_block=mlflow_block_name, log_dir=str(log_dir))
    assert summary.verdict.startswith("drift") and summary.rows == 3000 and summary.labeled_rows == 3000
    assert {"monthly_charges", "usage_gb", "support_calls"} <= set(summary.drift.drifted_columns)
    assert "tenure_months" not in summary.drift.drifted_columns
    assert DRIFT_DETECTED in summary.events
    assert summary.performance is not None and summary.performance.labeled_rows == 3000
    assert Path(summary.report_html).is_file() and Path(summary.drift.json_path).is_file()
    artifacts = MlflowClient(tracking_uri=mlflow_server.url).list_artifacts(champion["run_id"], "monitoring")
    assert artifacts, "the Evidently report was not attached to the champion's run"

    async def drift_events() -> list:
        async with get_client() as client:
            response = await client._client.post("/events/filter", json={"filter": {
                "event": {"name": [DRIFT_DETECTED]}, "occurred": {"since": started.isoformat()},
                "resource": {"id": [f"mlops.model.{MODEL}"]}}})
            return response.json()["events"]

    from servers import wait_until

    wait_until(lambda: bool(asyncio.run(drift_events())), 60, "the drift event on the server")
    event = asyncio.run(drift_events())[0]
    assert "monthly_charges" in event["payload"]["drifted_columns"]


def test_clean_traffic_is_healthy(champion: dict, mlflow_block_name: str, tmp_path: Path) -> None:
    log_dir = tmp_path / "ilog"
    log_traffic(log_dir, champion["model_dir"], champion["features"], champion["version"], 3000, 0.0, 0.0, day=1)
    summary = monitor_model(model_name=MODEL, window_hours=1, mlflow_block=mlflow_block_name, log_dir=str(log_dir))
    assert summary.verdict == "healthy", summary.render()
    assert summary.events == []


def test_small_window_is_not_enough_data_not_an_alarm(champion: dict, mlflow_block_name: str,
                                                      tmp_path: Path) -> None:
    log_dir = tmp_path / "ilog"
    log_traffic(log_dir, champion["model_dir"], champion["features"], champion["version"], 20, 1.0, 0.0, day=5,
                labels=False)
    summary = monitor_model(model_name=MODEL, window_hours=1, mlflow_block=mlflow_block_name, log_dir=str(log_dir))
    assert summary.verdict == "not_enough_data" and summary.events == []


def test_no_champion_is_reported(mlflow_block_name: str, tmp_path: Path) -> None:
    summary = monitor_model(model_name="never-trained", mlflow_block=mlflow_block_name, log_dir=str(tmp_path))
    assert summary.verdict == "no_champion"
