"""monitor-model on a real champion, a real inference log and real Evidently."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.continuous_training import continuous_training
from flows.monitor_model import monitor_model
from tasks.events import DRIFT_DETECTED
from tasks.inference_log import InferenceLogWriter, attach_ground_truth
from tasks.model_evaluation import load_model
from tasks.sample_data import make_customer_frame
from tasks.sklearn_training import TrainingSpec

MODEL = "mon-model"
TABLE_COLUMNS = ["column", "role", "drifted", "test", "score", "threshold", "effect size (psi)", "reading"]


def run_monitor(**kwargs: object) -> tuple:
    """Run monitor-model; return its summary, the flow run as the API reads it, and its artifacts by key."""
    state = monitor_model(return_state=True, **kwargs)
    summary = state.result()
    run_id = state.state_details.flow_run_id

    async def read() -> tuple:
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
            artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
            return run, {a.key: a for a in artifacts}

    run, artifacts = asyncio.run(read())
    return summary, run, artifacts


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
    from blocks.mlflow_server import MlflowServer
    from tasks.mlflow_registry import download_model_version, version_info

    client = MlflowClient(tracking_uri=mlflow_server.url)
    version = client.get_model_version(MODEL, summary.model_version)
    # MLflow 3: the model is a LoggedModel, not an artifact folder of the run.
    local = download_model_version.fn(MlflowServer.load(mlflow_block_name), version_info(version),
                                      str(Path(sample_dir) / f"{MODEL}-model"))
    return {"version": summary.model_version, "run_id": summary.run_id, "model_dir": local,
            "features": json.loads(version.tags["mlops.features"])}


def test_drifted_traffic_is_detected_reported_and_announced(champion: dict, mlflow_block_name: str,
                                                            tmp_path: Path, mlflow_server) -> None:
    log_dir = tmp_path / "ilog"
    log_traffic(log_dir, champion["model_dir"], champion["features"], champion["version"], 3000, 1.0, 1.0, day=5)
    started = dt.datetime.now(dt.UTC)
    summary, run, cards = run_monitor(model_name=MODEL, window_hours=1, mlflow_block=mlflow_block_name,
                                      log_dir=str(log_dir))
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
    # The event links back to the monitor run and the report, for the retrain it triggers.
    assert event["payload"]["monitor_flow_run_id"] == str(run.id)
    assert event["payload"]["monitor_flow_run_url"].endswith(f"/runs/flow-run/{run.id}")
    assert event["payload"]["report_url"] == summary.report_url

    # The runs list tells a drifted run from a healthy one: state message and tags.
    drifted = len(summary.drift.drifted_columns)
    assert run.state.type.value == "COMPLETED" and run.state.message == summary.headline
    assert run.state.message.startswith(f"drift {drifted}/{len(summary.drift.column_scores)} columns, decay roc_auc -")
    assert {"drift", "decay"} <= set(run.tags)
    # Artifact cards carry the verdict.
    summary_artifact = cards[f"{MODEL}-monitoring-summary"]
    table_artifact = cards[f"{MODEL}-monitoring-metrics"]
    for artifact in (summary_artifact, table_artifact):
        assert artifact.description == f"{summary.headline} ({MODEL} v{champion['version']})"
    # The summary links the MLflow run, the version and the report as served by the MLflow server.
    markdown = summary_artifact.data
    assert f"{mlflow_server.url}/#/runs/{champion['run_id']}" in markdown
    assert f"{mlflow_server.url}/#/models/{MODEL}/versions/{champion['version']}" in markdown
    assert summary.report_url.startswith(f"{mlflow_server.url}/get-artifact?") and summary.report_url in markdown
    assert "below the dataset-drift share" not in markdown and "at or above the dataset-drift share 50%" in markdown
    served = httpx.get(summary.report_url, timeout=30)
    assert served.status_code == 200 and f"{MODEL} v{champion['version']}: monitoring report" in served.text

    # The drift table: every column, most drifted first, p-values readable, the prediction row.
    rows = json.loads(table_artifact.data)
    assert [list(r) for r in rows] == [TABLE_COLUMNS] * len(rows)
    assert {r["column"] for r in rows if r["role"] == "feature"} == set(summary.drift.column_scores)
    [prediction] = [r for r in rows if r["role"] == "prediction"]
    assert prediction["column"] == "prediction" and prediction["test"] == "chisquare"
    flags = [r["drifted"] for r in rows]
    assert flags == sorted(flags, key=lambda f: f != "yes") and flags.count("yes") >= 3
    for group in ("yes", "no"):
        effects = [float(r["effect size (psi)"]) for r in rows if r["drifted"] == group]
        assert effects == sorted(effects, reverse=True)
    scores = {r["column"]: r["score"] for r in rows}
    assert scores["monthly_charges"] != "0" and "e-" in scores["monthly_charges"]  # e.g. 1.2e-233
    assert float(scores["monthly_charges"].lstrip("< ")) < 1e-10
    assert all(r["threshold"] == "0.05" for r in rows)
    assert rows[0]["drifted"] == "yes" and float(rows[0]["effect size (psi)"]) > 0.25

    # The Evidently report: a header saying what it describes, and a quality section (labels arrived).
    html = Path(summary.report_html).read_text()
    data_rev = MlflowClient(tracking_uri=mlflow_server.url).get_model_version(
        MODEL, champion["version"]).tags["mlops.data.rev"]
    for text in (f"{MODEL} v{champion['version']}: monitoring report", data_rev[:12], summary.window_start,
                 summary.window_end, "current rows", "3,000", "reference rows", "labelled rows",
                 "Model quality on the labelled rows of the window", "share of each window"):
        assert text in html, text


def test_clean_traffic_is_healthy(champion: dict, mlflow_block_name: str, tmp_path: Path) -> None:
    log_dir = tmp_path / "ilog"
    log_traffic(log_dir, champion["model_dir"], champion["features"], champion["version"], 3000, 0.0, 0.0, day=1)
    summary, run, artifacts = run_monitor(model_name=MODEL, window_hours=1, mlflow_block=mlflow_block_name,
                                          log_dir=str(log_dir))
    assert summary.verdict == "healthy", summary.render()
    assert summary.events == []
    drifted, tested = len(summary.drift.drifted_columns), len(summary.drift.column_scores)
    assert run.state.message.startswith(f"healthy: {drifted}/{tested} columns drifted")
    assert "healthy" in run.tags and "drift" not in run.tags
    assert artifacts[f"{MODEL}-monitoring-summary"].description.startswith(summary.headline)
    assert "below the dataset-drift share 50%" in artifacts[f"{MODEL}-monitoring-summary"].data


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
