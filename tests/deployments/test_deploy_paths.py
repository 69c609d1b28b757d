"""Every deploy path gives the same deployments for the same inputs, against the real Prefect server.

``prefect-mlops deploy`` (Python ``prefect.deploy``) and ``prefect-mlops write-yaml`` + ``prefect deploy --all``
register the same names with the same pool, parameters, job variables, pull steps and schedules.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

from deployments.definitions import PROJECT_ROOT, definitions

CLI = [sys.executable, "-m", "deployments.cli"]
POOL = "paths-pool"
REPO = "https://example.invalid/acme/mlops.git"
OPTIONS = ["--work-pool", POOL, "--mlflow-block", "prod-mlflow", "--serving-block", "prod-serving",
           "--param", "model_name=paths-model", "--job-variable", 'env={"PREFECT_MLOPS_HOME": "/srv/mlops"}',
           "--repo-url", REPO, "--branch", "main", "--watch-every", "120"]


async def _registered(delete: bool = False) -> dict[str, dict[str, Any]]:
    async with get_client() as client:
        found = await client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL])))
        flows = {d.flow_id: (await client.read_flow(d.flow_id)).name for d in found}
        if delete:
            for deployment in found:
                await client.delete_deployment(deployment.id)
            await client.delete_work_pool(POOL)
        return {f"{flows[d.flow_id]}/{d.name}": {
            "id": d.id, "updated": d.updated, "pool": d.work_pool_name, "parameters": d.parameters,
            "job_variables": d.job_variables,
            "pull_steps": d.pull_steps, "entrypoint": d.entrypoint, "tags": sorted(d.tags),
            "schedules": [(getattr(s.schedule, "cron", None), getattr(s.schedule, "interval", None))
                          for s in d.schedules]}
            for d in found}


async def _create_pool() -> None:
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)


def _run(command: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_cli_and_yaml_paths_register_the_same_deployments(prefect_server: str, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    asyncio.run(_create_pool())
    try:
        _run([*CLI, "deploy", *OPTIONS], env)
        by_cli = asyncio.run(_registered())
        yaml_file = tmp_path / "prefect.yaml"
        _run([*CLI, "write-yaml", *OPTIONS, "--output", str(yaml_file)], env)
        _run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(yaml_file)],
             env)
        by_yaml = asyncio.run(_registered())
    finally:
        asyncio.run(_registered(delete=True))
    assert len(by_cli) == len(definitions())
    assert all(by_yaml[name].pop("updated") > by_cli[name].pop("updated") for name in by_cli)  # the YAML wrote
    assert by_yaml == by_cli  # ... the same deployments (same ids), and changed nothing
    deploy = by_cli["deploy-model/on-promotion"]
    assert deploy["pool"] == POOL
    assert deploy["parameters"] == {"model_name": "paths-model", "mlflow_block": "prod-mlflow",
                                    "serving_block": "prod-serving"}
    assert deploy["job_variables"] == {"env": {"PREFECT_MLOPS_HOME": "/srv/mlops"}}
    assert deploy["pull_steps"] == [{"prefect.deployments.steps.git_clone": {"repository": REPO, "branch": "main"}}]
    assert by_cli["watch-data/watch"]["schedules"] == [(None, dt.timedelta(seconds=120))]
    assert by_cli["continuous-training/scheduled"]["schedules"] == [("0 3 * * *", None)]
