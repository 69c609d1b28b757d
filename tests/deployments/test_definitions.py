"""Deployments against the real Prefect server: prefect.yaml, schedules that run, triggers with a cool-down."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound
from servers import wait_until

from deployments.definitions import PROJECT_ROOT, definitions, prefect_yaml, runner_deployments
from tasks.events import DRIFT_DETECTED, model_resource_id
from tasks.system import stop_started

CLI = [sys.executable, "-m", "deployments.cli"]


def _env(prefect_server: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PREFECT_MLOPS_PROJECT": str(PROJECT_ROOT), "PYTHONPATH": str(PROJECT_ROOT)}


async def _runs(deployment_id: uuid.UUID) -> list:
    async with get_client() as client:
        return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[
            deployment_id])))


def runs_of(deployment_id: uuid.UUID) -> list:
    return asyncio.run(_runs(deployment_id))


def test_committed_prefect_yaml_matches_the_definitions() -> None:
    import yaml

    from deployments.code_source import CodeSource

    committed = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    [step] = committed["pull"]  # workers clone the repository it names (the origin when it was written)
    clone = step["prefect.deployments.steps.git_clone"]
    expected = prefect_yaml(source=CodeSource(clone["repository"], clone.get("branch")))
    assert committed == yaml.safe_load(yaml.safe_dump(expected)), "run `prefect-mlops write-yaml`"
    names = {(d["entrypoint"], d["name"]) for d in committed["deployments"]}
    assert len(names) == len(definitions())


def test_prefect_deploy_all_accepts_prefect_yaml(prefect_server: str) -> None:
    env = _env(prefect_server)
    subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", "mlops", "--type", "process",
                    "--overwrite"], env=env, check=True, capture_output=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    async def read() -> dict[str, object]:
        async with get_client() as client:
            found = {}
            for d in definitions():
                flow_name = d.flow_name
                found[f"{flow_name}/{d.name}"] = await client.read_deployment_by_name(f"{flow_name}/{d.name}")
            return found

    deployments = asyncio.run(read())

    async def delete() -> None:  # other tests serve deployments of the same names from a runner
        async with get_client() as client:
            for deployment in deployments.values():
                await client.delete_deployment(deployment.id)

    try:
        assert len(deployments) == len(definitions())
        scheduled = deployments["continuous-training/scheduled"]
        assert scheduled.schedules and scheduled.schedules[0].schedule.cron == "0 3 * * *"
        assert scheduled.work_pool_name == "mlops"
        on_drift = deployments["continuous-training/on-drift"]
        assert on_drift.pull_steps and on_drift.entrypoint == "flows/continuous_training.py:continuous_training"
    finally:
        asyncio.run(delete())


def test_interval_schedule_creates_runs_that_complete(prefect_server: str, tmp_path: Path) -> None:
    env = {**_env(prefect_server), "PREFECT_MLOPS_HOME": str(tmp_path / "state")}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    # One run at a time (--limit 1): on a loaded machine a watch run can outlast the interval, and
    # unlimited, the runner starts every due run at once, which only loads the machine more.
    serve = subprocess.Popen([*CLI, "serve", "--only", "watch", "--watch-every", "5", "--limit", "1", "--param",
                              "model_name=schedule-test"], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=PROJECT_ROOT)
    holder: dict[str, uuid.UUID] = {}
    try:
        async def deployment_id() -> uuid.UUID:
            async with get_client() as client:
                return (await client.read_deployment_by_name("watch-data/watch")).id

        def registered() -> bool:
            try:
                holder["id"] = asyncio.run(deployment_id())
            except ObjectNotFound:
                return False
            return True

        wait_until(registered, 120, "serve registering watch-data/watch", serve,
                   lambda: (tmp_path / "serve.log").read_text(errors="replace")[-3000:], interval=1.0)

        def two_completed() -> bool:
            return sum(r.state_name == "Completed" for r in runs_of(holder["id"])) >= 2

        wait_until(two_completed, 150, "two scheduled watch-data runs", serve,
                   lambda: (tmp_path / "serve.log").read_text(errors="replace")[-3000:], interval=1.0)
        runs = runs_of(holder["id"])
        assert all(r.parameters.get("model_name") == "schedule-test" for r in runs)
    finally:
        # A runner given SIGTERM waits for its runs; one leaked in CI kept starting runs for the rest of the
        # session (load 28 on 2 cores). SIGTERM, then SIGKILL of it and its flow-run processes.
        stop_started(serve, 30)
        if "id" in holder:  # else its 5-second schedule keeps adding runs to the session's server

            async def delete() -> None:
                async with get_client() as client:
                    await client.delete_deployment(holder["id"])

            asyncio.run(delete())


def test_drift_event_starts_one_retrain_per_cooldown(prefect_server: str) -> None:
    [deployment] = runner_deployments([d for d in definitions(cooldown=dt.timedelta(minutes=30))
                                       if d.name == "on-drift"])
    deployment.name = "on-drift-cooldown-test"
    deployment_id = deployment.apply()

    def emit(model: str) -> None:
        emit_event(event=DRIFT_DETECTED, resource={"prefect.resource.id": model_resource_id(model),
                                                   "prefect.resource.name": model},
                   payload={"drift_share": 0.6, "drifted_columns": ["monthly_charges"],
                            "window": {"start": "2026-11-20T00:00:00+00:00", "end": "2026-11-21T00:00:00+00:00"}})

    def runs_for(model: str) -> list:
        return [r for r in runs_of(deployment_id) if r.parameters.get("model_name") == model]

    # The automation is loaded by the server's trigger service asynchronously: retry the first event.
    def first_fired() -> bool:
        if not runs_for("cooldown-a"):
            emit("cooldown-a")
        return bool(runs_for("cooldown-a"))

    wait_until(first_fired, 120, "a flow run from the first drift event", interval=3.0)
    [run] = runs_for("cooldown-a")
    assert run.parameters["trigger"]["event"] == DRIFT_DETECTED
    assert run.parameters["trigger"]["payload"]["drift_share"] == 0.6
    assert run.parameters["trigger"]["event_id"]
    assert run.parameters["feedback_since"] == "2026-11-20T00:00:00+00:00"

    emit("cooldown-a")  # a second drift event for the same model, inside the cool-down
    emit("cooldown-b")  # another model: proves the trigger processed the events after it
    wait_until(lambda: bool(runs_for("cooldown-b")), 120, "the run for model b", interval=1.0)
    assert len(runs_for("cooldown-a")) == 1
