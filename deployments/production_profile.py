"""The production profile on one machine: Prefect and MLflow on PostgreSQL, a process work pool, two workers.

What ``make profile-postgres`` starts (and ``make profile-postgres-stop`` stops, by PID):

* PostgreSQL (``deployments/postgres.py``) with a ``prefect`` and an ``mlflow`` database;
* ``prefect server start`` on ``postgresql+asyncpg://.../prefect``;
* ``mlflow server`` on ``postgresql://.../mlflow``, artifacts proxied to a folder that stands in for
  an object store (``<root>/object-store/mlflow``); the DVC remote is a folder beside it;
* blocks ``prod-mlflow`` and ``prod-dvc`` on that Prefect server;
* a ``process`` work pool with a concurrency limit, every deployment registered with
  ``prefect-mlops deploy --work-pool``, and two workers started with ``--limit``.

A worker without ``--limit`` starts every run it sees, so the first worker to poll claims every
due run and the second idles; ``--limit 1`` per worker and the pool's limit (workers x limit)
spread runs over the workers and bound what runs at once.

    .venv/bin/python -m deployments.production_profile up [--root DIR] [--workers 2] [--limit 1]
    .venv/bin/python -m deployments.production_profile down [--root DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.postgres import PostgresServer, start_postgres
from deployments.processes import (
    BIN,
    TELEMETRY_OFF,
    ServerProcess,
    record_kept,
    start_mlflow_server,
    start_prefect_server,
    stop_kept,
)
from tasks.system import start_process, stop_started, wait_until

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Block names the profile saves on its Prefect server.
MLFLOW_BLOCK, DVC_BLOCK = "prod-mlflow", "prod-dvc"
#: Work pool of the profile.
POOL = "mlops"


@dataclass
class Profile:
    """The running servers of the profile."""

    root: Path
    postgres: PostgresServer
    prefect: ServerProcess
    mlflow: ServerProcess

    @property
    def api_url(self) -> str:
        """The Prefect API URL."""
        return f"{self.prefect.url}/api"

    @property
    def object_store(self) -> Path:
        """The folder that stands in for the object store (MLflow artifacts, DVC remote)."""
        return self.root / "object-store"

    def env(self, **extra: str) -> dict[str, str]:
        """Return an environment for a client process (CLI, worker) of this profile."""
        return {**os.environ, **TELEMETRY_OFF, "PREFECT_API_URL": self.api_url,
                "PREFECT_MLOPS_PROJECT": str(PROJECT_ROOT), **extra}

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """Point this process's Prefect client at the profile's server for the block."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            yield

    def stop(self) -> None:
        """Stop the servers, then PostgreSQL."""
        for server in (self.prefect, self.mlflow):
            server.stop()
        self.postgres.stop()


def start_profile(root: Path, ui: bool = True, scheduler_loop_s: float = 5.0, deadline_s: float = 300.0) -> Profile:
    """Start PostgreSQL, then the Prefect server and the MLflow server on it (at the same time).

    Args:
        root: Folder of the profile (cluster, server homes, object-store folder).
        ui: Serve Prefect's UI.
        scheduler_loop_s: How often Prefect's scheduler creates runs from schedules.
        deadline_s: Seconds to wait for each server.

    Returns:
        The running profile; stop it with :meth:`Profile.stop`.

    Examples:
        >>> from deployments.production_profile import start_profile
        >>> profile = start_profile(Path(".mlops/production"))  # doctest: +SKIP
    """
    root = Path(root).resolve()
    postgres = start_postgres(root / "postgres")
    with ThreadPoolExecutor(2) as pool:
        prefect = pool.submit(start_prefect_server, root / "prefect", ui=ui, deadline_s=deadline_s,
                              scheduler_loop_s=scheduler_loop_s,
                              database_url=postgres.url("prefect", "postgresql+asyncpg"))
        mlflow = pool.submit(start_mlflow_server, root / "mlflow", deadline_s=deadline_s,
                             backend_store_uri=postgres.url("mlflow"),
                             artifacts_destination=str(root / "object-store" / "mlflow"))
    started = [f.result() for f in (prefect, mlflow) if f.exception() is None]
    failed = [f.exception() for f in (prefect, mlflow) if f.exception() is not None]
    if failed:
        for server in started:
            server.stop()
        postgres.stop()
        raise failed[0]
    return Profile(root, postgres, prefect.result(), mlflow.result())


def save_blocks(profile: Profile, experiment: str = "production") -> tuple[str, str]:
    """Save the ``prod-mlflow`` and ``prod-dvc`` blocks on the profile's Prefect server; return their names."""
    from blocks.dvc_repository import DvcRepository
    from blocks.mlflow_server import MlflowServer

    with profile.settings():
        MlflowServer(tracking_uri=profile.mlflow.url, experiment_name=experiment).save(MLFLOW_BLOCK, overwrite=True)
        DvcRepository(repo_path=str(profile.root / "data-repo"),
                      remote_url=str(profile.object_store / "dvc")).save(DVC_BLOCK, overwrite=True)
    return MLFLOW_BLOCK, DVC_BLOCK


def create_pool(profile: Profile, name: str = POOL, concurrency_limit: int | None = 2) -> None:
    """Create (or update) a ``process`` work pool with a concurrency limit (flow runs at once, all workers)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    async def create() -> None:
        async with get_client() as client:
            try:
                await client.create_work_pool(WorkPoolCreate(name=name, type="process",
                                                             concurrency_limit=concurrency_limit))
            except ObjectAlreadyExists:
                await client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))

    with profile.settings():
        asyncio.run(create())


def deploy(profile: Profile, pool: str = POOL, *options: str) -> list[str]:
    """Register deployments with ``prefect-mlops deploy --work-pool`` (the profile's blocks as parameters).

    Args:
        profile: The running profile.
        pool: Work pool name.
        options: More ``prefect-mlops deploy`` options (``--only``, ``--watch-every``, ``--param``...).

    Returns:
        The deployment ids the command printed.
    """
    cmd = [sys.executable, "-m", "deployments.cli", "--mlflow-block", MLFLOW_BLOCK, "deploy", "--work-pool", pool,
           "--param", f"dvc_block={DVC_BLOCK}", *options]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=profile.env(), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"prefect-mlops deploy failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return re.findall(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", done.stdout, re.MULTILINE)


def start_workers(profile: Profile, pool: str = POOL, count: int = 2, limit: int = 1, poll_s: float = 5.0,
                  deadline_s: float = 120.0) -> dict[str, subprocess.Popen]:
    """Start ``count`` process workers on ``pool``, each taking at most ``limit`` runs at once; wait until online.

    Args:
        profile: The running profile.
        pool: Work pool name.
        count: Number of workers.
        limit: Flow runs at once per worker (``prefect worker start --limit``).
        poll_s: Seconds between a worker's polls of the pool (``PREFECT_WORKER_QUERY_SECONDS``).
        deadline_s: Seconds to wait until every worker has registered with the pool.

    Returns:
        Worker name -> its process (stop each with ``tasks.system.stop_started``).
    """
    env = profile.env(PREFECT_WORKER_QUERY_SECONDS=str(poll_s), PREFECT_WORKER_HEARTBEAT_SECONDS=str(max(poll_s, 5)))
    workers = {}
    for i in range(count):
        name = f"{pool}-worker-{i + 1}"
        cmd = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", "--limit", str(limit),
               "--name", name]
        workers[name] = start_process(cmd, profile.root / "workers" / f"{name}.log", env, cwd=PROJECT_ROOT)
    try:
        wait_until(lambda: set(workers) <= online_workers(profile, pool), deadline_s, f"workers on {pool}",
                   interval=1.0)
    except BaseException:
        for process in workers.values():
            stop_started(process)
        raise
    return workers


def online_workers(profile: Profile, pool: str = POOL) -> set[str]:
    """Return the names of the workers the pool sees online."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> set[str]:
        async with get_client() as client:
            return {w.name for w in await client.read_workers_for_work_pool(pool) if w.status == "ONLINE"}

    with profile.settings():
        return asyncio.run(read())


def worker_of(flow_run: Any) -> str | None:
    """Return the name of the worker that ran ``flow_run`` (the ``prefect.worker.name`` label a worker sets)."""
    return (flow_run.labels or {}).get("prefect.worker.name")


def up(root: Path, workers: int = 2, limit: int = 1) -> dict[str, str]:
    """Start the whole profile, deploy every deployment, start the workers, and leave them running.

    Returns:
        What a user needs: URLs and the environment to point clients at the profile.
    """
    profile = start_profile(root)
    processes: dict[str, subprocess.Popen] = {}
    try:
        save_blocks(profile)
        create_pool(profile, POOL, concurrency_limit=workers * limit)
        deploy(profile, POOL)
        processes = start_workers(profile, POOL, count=workers, limit=limit)
    except BaseException:
        for process in processes.values():
            stop_started(process)
        profile.stop()
        raise
    record_kept(profile.root, {**{n: (p.pid, str(profile.root / "workers" / f"{n}.log"))
                                  for n, p in processes.items()},
                               "prefect-server": (profile.prefect.process.pid, profile.prefect.url),
                               "mlflow-server": (profile.mlflow.process.pid, profile.mlflow.url),
                               "postgres": (profile.postgres.process.pid, str(profile.postgres.log_path))})
    return {"PREFECT_API_URL": profile.api_url, "MLFLOW_TRACKING_URI": profile.mlflow.url,
            "PREFECT_API_DATABASE_CONNECTION_URL": profile.postgres.url("prefect", "postgresql+asyncpg"),
            "MLFLOW_BACKEND_STORE_URI": profile.postgres.url("mlflow"), "work pool": f"{POOL} (limit "
            f"{workers * limit}), workers: {', '.join(processes)} (--limit {limit} each)"}


def main(argv: list[str] | None = None) -> int:
    """``up``: start and leave running; ``down``: stop what ``up`` left running."""
    from blocks.settings import state_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--root", default=None, help="profile folder (default: <state folder>/production)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=1, help="flow runs at once per worker")
    args = parser.parse_args(argv)
    root = Path(args.root) if args.root else state_dir() / "production"
    if args.action == "down":
        print("\n".join(stop_kept(root.resolve())) or "nothing was running")
        return 0
    for key, value in up(root, args.workers, args.limit).items():
        print(f"{key}={value}" if key.isupper() else f"{key}: {value}")
    print(f"stop with: make profile-postgres-stop (or python -m deployments.production_profile down --root {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
