"""The level-1 loop end to end: drift in served traffic -> event -> retrain -> promote -> new champion serving.

Nothing in this test calls the training or deploy flows after the first champion: the
monitoring flow emits the drift event, the Prefect server's automation starts
``continuous-training/on-drift`` in a runner process, the promotion event starts
``deploy-model/on-promotion``, and the test only watches the endpoint.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from servers import wait_until
from serving_fixtures import serving_block_for

from deployments.definitions import PROJECT_ROOT, wait_for_triggers
from examples.demo import Traffic, send_day
from flows.continuous_training import continuous_training
from flows.deploy_model import deploy_model
from flows.monitor_model import monitor_model
from tasks.events import DRIFT_DETECTED, PERFORMANCE_DECAYED
from tasks.inference_log import attach_ground_truth
from tasks.sample_data import make_customer_frame
from tasks.serving_endpoint import serving_status, stop_serving
from tasks.sklearn_training import TrainingSpec
from tasks.system import stop_started

MODEL = "loop-model"


def retrain_runs(deployment_name: str = "continuous-training/on-drift") -> list:
    async def read() -> list:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(deployment_name)
            runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(
                any_=[deployment.id])))
            return [r for r in runs if r.parameters.get("model_name") == MODEL]

    return asyncio.run(read())


def test_drift_in_served_traffic_leads_to_a_new_champion_serving(
        mlflow_block_name: str, mlflow_server, sample_dir: Path, session_home: Path, tmp_path: Path,
        prefect_server: str) -> None:
    serving = serving_block_for(session_home, "loop-serving")
    kwargs = dict(model_name=MODEL, mlflow_block=mlflow_block_name)
    first = continuous_training(data_file=str(sample_dir / "day0.parquet"), dataset_path=f"data/{MODEL}.parquet",
                                training=TrainingSpec(search_space={"C": [1.0]}), **kwargs)
    deployed = deploy_model(serving_block="loop-serving", **kwargs)
    assert deployed.model_version == first.model_version

    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_MLOPS_PROJECT": str(PROJECT_ROOT)}
    log = open(tmp_path / "runner.log", "wb")  # noqa: SIM115
    runner = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "serve", "--only", "on-drift,on-promotion", "--cooldown-seconds",
         "600", "--param", f"mlflow_block={mlflow_block_name}", "--param", "serving_block=loop-serving",
         "--param", f"dataset_path=data/{MODEL}.parquet"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_triggers(["continuous-training/on-drift", "deploy-model/on-promotion"])
    features = json.loads(MlflowClient(tracking_uri=mlflow_server.url).get_model_version(
        MODEL, first.model_version).tags["mlops.features"])
    background = None
    try:
        day_start = dt.datetime.now(dt.UTC)
        frame = make_customer_frame(3000, seed=21, day=4, covariate_drift=0.8, concept_drift=0.8)
        labels = send_day(deployed.url, frame, features)
        attach_ground_truth(str(serving.log_path()), MODEL, labels)
        wait_until(lambda: serving_status(serving).get("inference_log", {}).get("written", 0) >= len(labels), 60,
                   "the inference log")
        hours = (dt.datetime.now(dt.UTC) - day_start).total_seconds() / 3600 + 1e-3
        background = Traffic(deployed.url, json.loads(frame.head(100)[features].to_json(orient="records"))).start()
        result = monitor_model(window_hours=hours, serving_block="loop-serving", **kwargs)
        assert {DRIFT_DETECTED, PERFORMANCE_DECAYED} & set(result.events), result.render()
        assert {"monthly_charges", "usage_gb", "support_calls"} <= set(result.drift.drifted_columns)
        # Monitoring runs again and again in production; if the server's trigger service had not
        # loaded the automation yet, the next monitoring run's event starts the retrain.
        for _ in range(3):
            try:
                wait_until(lambda: bool(retrain_runs()), 45, "a continuous-training/on-drift run")
                break
            except TimeoutError:
                monitor_model(window_hours=hours, serving_block="loop-serving", **kwargs)
        assert len(retrain_runs()) == 1  # the cool-down: repeated drift events, one retrain

        def new_champion_answers() -> bool:
            status = serving_status(serving)
            answering = (status.get("answering") or {}).get("model_version")
            return status["state"] == "serving" and answering not in (None, first.model_version)

        wait_until(new_champion_answers, 300, "the retrained champion answering on the stable URL", runner,
                   lambda: (tmp_path / "runner.log").read_text(errors="replace")[-4000:], interval=1.0)
        # The swap is done; deploy-model still drains and stops the old backend: let it finish.
        wait_until(lambda: all(r.state and r.state.is_final() for r in retrain_runs("deploy-model/on-promotion"))
                   and bool(retrain_runs("deploy-model/on-promotion")), 120, "deploy-model to finish", interval=1.0)
        assert all(r.state_name == "Completed" for r in retrain_runs("deploy-model/on-promotion"))
        background.stop()
        assert background.sent > 0 and background.failed == 0, background.errors[:5]

        client = MlflowClient(tracking_uri=mlflow_server.url)
        champion = client.get_model_version_by_alias(MODEL, "champion")
        assert champion.version != first.model_version
        trigger = json.loads(champion.tags["mlops.trigger"])
        assert trigger["event"] in result.events and trigger["resource"] == f"mlops.model.{MODEL}"
        assert champion.tags["mlops.prefect.deployment"] == "on-drift"
        assert champion.tags["mlops.data.rev"] != first.data_rev
        assert str(serving_status(serving)["model_version"]) == str(champion.version)

        # Lineage from the live endpoint back to the data and the event-started flow run that made it.
        from deployments.lineage import model_lineage

        chain = model_lineage(MODEL, mlflow_block=mlflow_block_name, serving_block="loop-serving")
        assert chain["version"] == str(champion.version) and chain["endpoint"]["serves_this_version"], chain
        assert chain["data"]["rev"] == champion.tags["mlops.data.rev"] and chain["data"]["md5"]
        assert chain["run"]["id"] == champion.run_id and chain["run"]["test_metrics"]
        assert chain["flow_run"]["id"] == champion.tags["mlops.prefect.flow_run_id"]
        assert chain["flow_run"]["deployment"] == "continuous-training/on-drift", chain["flow_run"]
        assert chain["flow_run"]["state"] == "Completed"
        assert chain["flow_run"]["started_by"]["kind"] == "event"
        assert chain["flow_run"]["started_by"]["event"] == trigger["event"]
        # Issue 9: the retrain's summary links the monitor run that saw the drift and the triggering event.
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        with get_client(sync_client=True) as prefect:
            [summary] = [a for a in prefect.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"{MODEL}-training-summary"])))  # the retrain's own summary
                         if str(a.flow_run_id) == champion.tags["mlops.prefect.flow_run_id"]]
            started = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
                f"{MODEL}-training-monitor-run", f"{MODEL}-training-triggering-event"])))
        assert "**Started by**" in summary.data and summary.description.startswith(f"v{champion.version} promoted")
        assert {a.key for a in started} == {f"{MODEL}-training-monitor-run", f"{MODEL}-training-triggering-event"}
        ui = prefect_server.removesuffix("/api")
        assert all(f"]({ui}/" in a.data for a in started), [a.data for a in started]  # markdown links to the UI
        [moved] = [m for m in chain["history"] if m["alias"] == "champion" and m["to_version"] == champion.version]
        before = model_lineage(MODEL, mlflow_block=mlflow_block_name, serving_block="loop-serving",
                               at=dt.datetime.fromisoformat(moved["at"]) - dt.timedelta(milliseconds=1))
        assert before["version"] == str(first.model_version) and before["data"]["rev"] == first.data_rev
    finally:
        if background is not None:
            background.stop()
        stop_started(runner, 30)  # SIGTERM, then SIGKILL of the runner and its flow-run processes
        stop_serving(serving)
