"""The production profile: Prefect and MLflow on a real PostgreSQL, a process work pool, two workers.

One chain, started by the schedule alone: ``watch-data/watch`` (an interval schedule) runs on a
worker, versions the dropped data and emits ``mlops.data.versioned``; the server's trigger starts
``continuous-training/on-new-data`` on a worker; it trains, registers and promotes a champion in
MLflow on PostgreSQL. Two workers with ``--limit 1`` under a pool limit of 2 share the runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from servers import wait_until

from deployments.postgres import PostgresUnavailable, install_postgres
from deployments.production_profile import (
    Profile,
    create_pool,
    deploy,
    save_blocks,
    start_profile,
    start_workers,
    worker_of,
)
from tasks.events import DATA_VERSIONED
from tasks.system import log_tail, stop_started

# Bounded: servers ~30 s, deploy ~15 s, the watch -> event -> training chain on the workers ~1-2 min.
pytestmark = pytest.mark.timeout(420)

MODEL = "pg-profile-model"
POOL = "pg-test-pool"


@pytest.fixture(scope="module")
def profile() -> Iterator[Profile]:
    """PostgreSQL (installed with apt-get if missing), Prefect and MLflow on it; stopped by PID afterwards."""
    try:
        install_postgres()
    except PostgresUnavailable as exc:
        if shutil.which("apt-get") is None:
            pytest.skip(f"no PostgreSQL and no apt-get to install it: {exc}")
        raise
    # As root, PostgreSQL runs as the `postgres` user, which must reach its data folder: not under the
    # session's private (0700) temporary folder.
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-profile-"))
    root.chmod(0o755)
    started = start_profile(root / "prod", ui=False, scheduler_loop_s=2.0, deadline_s=600)
    yield started
    started.stop()
    shutil.rmtree(root, ignore_errors=True)


def flow_runs(profile: Profile, deployment_names: list[str]) -> list:
    async def read() -> list:
        async with get_client() as client:
            return await client.read_flow_runs(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=deployment_names)))

    with profile.settings():
        return asyncio.run(read())


def test_scheduled_and_triggered_training_complete_on_two_workers(profile: Profile, sample_dir: Path) -> None:
    save_blocks(profile)
    create_pool(profile, POOL, concurrency_limit=2)
    drop = profile.root / "incoming" / "latest.parquet"
    drop.parent.mkdir(parents=True)
    shutil.copy(sample_dir / "day0.parquet", drop)
    with ThreadPoolExecutor(1) as pool:  # the workers start while `prefect-mlops deploy` registers
        deployed = pool.submit(deploy, profile, POOL, "--only", "watch,on-new-data", "--watch-every", "10",
                               "--param", f"model_name={MODEL}", "--param", f"incoming_path={drop}")
        workers = start_workers(profile, POOL, count=2, limit=1, poll_s=2.0)
        try:
            assert len(deployed.result()) == 2
        except BaseException:
            for process in workers.values():
                stop_started(process, 30)
            raise
    logs = [profile.root / "workers" / f"{name}.log" for name in workers]

    def worker_logs() -> str:
        return "\n".join(f"--- {p.name}\n{log_tail(p, 2500)}" for p in logs)

    def done() -> dict[str, list]:
        runs = [r for r in flow_runs(profile, ["watch", "on-new-data"]) if r.state_name == "Completed"]
        training = [r for r in runs if r.parameters.get("trigger")]
        scheduled = [r for r in runs if not r.parameters.get("trigger")]
        both = {worker_of(r) for r in runs} == set(workers)
        return {"training": training, "scheduled": scheduled} if training and scheduled and both else {}

    try:
        # Each watch run re-announces the data until a champion is trained on it, so a trigger that the
        # server's trigger service had not loaded yet fires on the next one.
        completed = wait_until(done, 240, "a scheduled watch-data run and an event-triggered training run "
                               "completed on both workers", log=worker_logs, interval=2.0)
        # Read before the workers stop: a run they are still executing then ends as Crashed.
        failed = [r.name for r in flow_runs(profile, ["watch", "on-new-data"]) if r.state_type and
                  r.state_type.value in ("FAILED", "CRASHED")]
    finally:
        for process in workers.values():
            stop_started(process, 30)
    assert not failed, worker_logs()
    [training, *_] = completed["training"]
    assert training.parameters["trigger"]["event"] == DATA_VERSIONED
    assert training.parameters["model_name"] == MODEL
    assert all(r.work_pool_name == POOL for r in completed["training"] + completed["scheduled"])

    # Both servers keep their state in PostgreSQL: the flow run in Prefect's database, the champion in MLflow's.
    with contextlib.closing(profile.postgres.connect("prefect")) as conn, conn.cursor() as cur:
        cur.execute("SELECT state_type FROM flow_run WHERE id = %s", (str(training.id),))
        assert cur.fetchone() == ("COMPLETED",)
    with contextlib.closing(profile.postgres.connect("mlflow")) as conn, conn.cursor() as cur:
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (MODEL,))
        aliases = dict(cur.fetchall())
        cur.execute("SELECT value FROM model_version_tags WHERE name = %s AND version = %s AND key = %s",
                    (MODEL, aliases.get("champion"), "mlops.prefect.flow_run_id"))
        assert cur.fetchone() == (str(training.id),)
    # Artifacts went through the MLflow server to the object-store folder; DVC pushed to its folder remote.
    assert any((profile.object_store / "mlflow").rglob("MLmodel"))
    assert any(p.is_file() for p in (profile.object_store / "dvc").rglob("*"))
