"""Test access to the server helpers (they live in deployments.processes, used by the demo too)."""

from deployments.processes import (
    ServerProcess,
    free_port,
    start_mlflow_server,
    start_prefect_server,
    start_server,
    wait_until,
)

__all__ = ["ServerProcess", "free_port", "start_mlflow_server", "start_prefect_server", "start_server", "wait_until"]
