"""The demo's logging settings: a quiet console, but every flow run keeps its INFO logs on the server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from servers import wait_until

from deployments.definitions import PROJECT_ROOT

SCRIPT = """
from prefect import flow, get_run_logger

@flow(name="demo-logging")
def demo_logging() -> str:
    get_run_logger().info("gate decision: promoted v2")
    from prefect.runtime import flow_run
    return str(flow_run.id)

print("RUN", demo_logging())
"""


def test_quiet_console_keeps_info_logs_in_the_run(prefect_server: str) -> None:
    env = {**os.environ, "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING", "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("PREFECT_LOGGING_LEVEL", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                         cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gate decision" not in out.stdout + out.stderr and "| INFO" not in out.stderr  # quiet console
    run_id = uuid.UUID(out.stdout.split("RUN", 1)[1].strip())

    async def messages() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            return [log.message for log in logs]

    wait_until(lambda: "gate decision: promoted v2" in asyncio.run(messages()), 60, "the run's INFO log on the server",
               interval=0.5)


RUNNER_SCRIPT = """
from prefect import flow, get_run_logger

@flow(name="runner-logging")
def runner_logging() -> None:
    get_run_logger().info("monitoring decision: drift 5/10 columns")

if __name__ == "__main__":
    runner_logging.serve(name="logs")
"""


def test_runner_started_by_the_demo_keeps_info_logs(prefect_server: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.schemas.filters import FlowRunFilter

    from examples.demo import runner_env
    from tasks.system import stop_started

    # The demo's console level, and a user's WARNING default, are what the runner would inherit.
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    script = tmp_path / "runner_logging.py"
    script.write_text(RUNNER_SCRIPT)
    env = {**runner_env(prefect_server), "PYTHONPATH": str(PROJECT_ROOT)}
    with open(tmp_path / "runner.log", "wb") as log:
        runner = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        async def deployment_id() -> uuid.UUID | None:
            async with get_client() as client:
                try:
                    return (await client.read_deployment_by_name("runner-logging/logs")).id
                except Exception:  # noqa: BLE001 - not registered yet
                    return None

        found = wait_until(lambda: asyncio.run(deployment_id()), 120, "the runner's deployment", runner,
                           interval=1.0)

        async def start() -> uuid.UUID:
            async with get_client() as client:
                return (await client.create_flow_run_from_deployment(found)).id

        run_id = asyncio.run(start())

        async def state_and_messages() -> tuple[str | None, list[str]]:
            async with get_client() as client:
                [run] = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id={"any_": [run_id]}))
                logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
                return (run.state.type.value if run.state else None), [entry.message for entry in logs]

        def logged() -> bool:
            state, messages = asyncio.run(state_and_messages())
            return state == "COMPLETED" and "monitoring decision: drift 5/10 columns" in messages

        wait_until(logged, 180, "the runner-executed run's INFO log on the server", runner, interval=1.0)
    finally:
        stop_started(runner, 30)
