"""Test access to the server helpers (deployments.processes, used by the demo) and the host helpers (tasks.system)."""

from deployments.processes import ServerProcess, start_mlflow_server, start_prefect_server, start_server
from tasks.system import free_port, wait_until

__all__ = ["ServerProcess", "free_port", "start_mlflow_server", "start_prefect_server", "start_server", "wait_until"]
