"""Notifications and the new-data trigger against the real Prefect server."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from servers import wait_until
from tests_support import Receiver

from deployments.automations import create_notification_automation
from deployments.definitions import definitions, runner_deployments
from flows.continuous_training import continuous_training
from flows.watch_data import watch_data
from tasks.events import MODEL_REJECTED, emit_model_event
from tasks.sklearn_training import TrainingSpec


def test_failed_pipeline_and_rejected_promotion_notify_a_person(receiver: str) -> None:
    create_notification_automation(receiver, name="test-notify", block_name="test-notify")

    @flow(name="always-fails")
    def always_fails() -> None:
        raise RuntimeError("boom")

    def both_arrived() -> bool:
        subjects = " ".join(m.get("subject", "") for m in Receiver.received)
        return "prefect.flow-run.Failed" in subjects and MODEL_REJECTED in subjects

    # The server's trigger service loads new automations asynchronously: repeat until it has.
    def attempt() -> bool:
        if not both_arrived():
            always_fails(return_state=True)
            emit_model_event.fn(MODEL_REJECTED, "notify-model", {"version": "2", "reasons": ["roc_auc fell"]})
        return both_arrived()

    wait_until(attempt, 150, "webhook notifications", interval=5.0)
    rejected = next(m for m in Receiver.received if MODEL_REJECTED in m["subject"])
    assert "notify-model" in rejected["subject"] and "roc_auc fell" in rejected["body"]


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
