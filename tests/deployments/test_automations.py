"""Notifications and the new-data trigger against the real Prefect server."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.flow_engine import run_flow
from servers import wait_until
from tests_support import Receiver

from deployments.automations import create_notification_automation
from deployments.definitions import definitions, runner_deployments
from flows.continuous_training import continuous_training
from flows.watch_data import watch_data
from tasks.events import MODEL_REJECTED, emit_model_event
from tasks.sklearn_training import TrainingSpec


@flow(name="always-fails")
def always_fails(model_name: str = "notify-model") -> None:
    """A pipeline that fails (run from a deployment in the test)."""
    raise RuntimeError("boom: the training data is empty")


@flow(name="gate-rejects")
def gate_rejects(model_name: str = "notify-model") -> None:
    """A pipeline whose gate rejects the challenger: the event is emitted inside the flow run."""
    emit_model_event(MODEL_REJECTED, model_name, {"version": "2", "champion_version": "1", "run_id": "r1",
                                                 "reasons": ["roc_auc 0.71 is below the champion's 0.78"]})


def test_failed_pipeline_and_rejected_promotion_notify_a_person(receiver: str, prefect_server: str) -> None:
    create_notification_automation(receiver, name="test-notify", block_name="test-notify")
    deployment_id = always_fails.to_deployment(name="nightly").apply()

    async def deployment_run() -> object:
        async with get_client() as client:
            return await client.create_flow_run_from_deployment(deployment_id,
                                                                parameters={"model_name": "notify-model"})

    def arrived(what: str) -> list[dict]:
        return [m for m in Receiver.received if what in m.get("subject", "")]

    runs: dict[str, str] = {}

    # The server's trigger service loads new automations asynchronously: repeat until it has.
    def attempt() -> bool:
        if not arrived("always-fails / nightly failed"):
            run = asyncio.run(deployment_run())
            run_flow(always_fails, flow_run=run, parameters=run.parameters, return_type="state")
            runs["failed"] = str(run.id)
        if not arrived("challenger v2 rejected"):
            runs["rejected"] = str(gate_rejects(return_state=True).state_details.flow_run_id)
        return bool(arrived("always-fails / nightly failed") and arrived("challenger v2 rejected"))

    wait_until(attempt, 150, "webhook notifications", interval=5.0)
    ui = prefect_server.removesuffix("/api")
    failed = next(m for m in arrived("always-fails / nightly failed") if runs["failed"] in m["body"])
    # Subject: flow / deployment, what happened, the model; not the random run name alone.
    assert failed["subject"] == "prefect-mlops: always-fails / nightly failed (notify-model)"
    body = failed["body"]
    assert "Flow: always-fails\nDeployment: nightly\n" in body and "Model: notify-model" in body
    assert "boom: the training data is empty" in body  # the state message says what failed
    assert f"Open the run: {ui}/runs/flow-run/{runs['failed']}" in body
    assert "{'" not in body and "validated state" not in body  # readable text, not a dict dump

    [rejected] = [m for m in arrived("challenger v2 rejected") if runs["rejected"] in m["body"]]
    assert rejected["subject"] == "prefect-mlops: notify-model: challenger v2 rejected in gate-rejects"
    assert "version 2 of notify-model, was rejected by the promotion gate; the champion (v1) keeps serving" in (
        rejected["body"])
    assert "Reasons:\n- roc_auc 0.71 is below the champion's 0.78\nversion: 2\n" in rejected["body"]
    assert f"Open the run: {ui}/runs/flow-run/{runs['rejected']}" in rejected["body"]


def test_new_data_is_noticed_and_starts_training(mlflow_block_name: str, sample_dir: Path, tmp_path: Path) -> None:
    [deployment] = runner_deployments([d for d in definitions(parameters={"mlflow_block": mlflow_block_name})
                                       if d.name == "on-new-data"])
    deployment_id = deployment.apply()
    kwargs = dict(model_name="watch-model", dataset_path="data/watch-model.parquet", mlflow_block=mlflow_block_name)
    continuous_training(data_file=str(sample_dir / "day0.parquet"), training=TrainingSpec(search_space={}),
                        **kwargs)
    drop = tmp_path / "latest.parquet"
    shutil.copy(sample_dir / "day0.parquet", drop)
    assert not watch_data(incoming_path=str(drop), **kwargs).changed

    shutil.copy(sample_dir / "day1.parquet", drop)
    result = watch_data(incoming_path=str(drop), **kwargs)
    assert result.changed and result.event_id and result.md5 != result.reference_md5

    async def runs() -> list:
        async with get_client() as client:
            return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(
                any_=[deployment_id])))

    def started() -> bool:
        return any(r.parameters.get("model_name") == "watch-model" for r in asyncio.run(runs()))

    wait_until(started, 120, "a continuous-training run from the new-data event", interval=1.0)
    run = next(r for r in asyncio.run(runs()) if r.parameters.get("model_name") == "watch-model")
    assert run.parameters["trigger"]["payload"]["md5"] == result.md5
    assert run.parameters["mlflow_block"] == mlflow_block_name
