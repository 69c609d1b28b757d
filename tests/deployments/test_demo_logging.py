"""The demo's logging settings: a quiet console, but every flow run keeps its INFO logs on the server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

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
