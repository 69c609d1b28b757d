"""Start and stop the local servers of the embedded set-up (Prefect, MLflow) by PID.

Used by ``make demo`` and by the test fixtures: every server binds 127.0.0.1 on a free
port, is waited for with a health check and a deadline, and is stopped with every process
it started (found with ``psutil``, by PID and creation time), never left behind. The port,
wait and process helpers are those of ``tasks/system.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.system import (
    atomic_write_text,
    create_time,
    find_process,
    free_port,
    log_tail,
    process_tree,
    start_process,
    stop_processes,
    stop_started,
    wait_until,
)

BIN = Path(sys.executable).parent

#: Telemetry off in every process we start (each library's documented switch): the Prefect server's
#: usage report ("Failed to send telemetry" at ERROR when offline), MLflow's and BentoML's usage stats.
TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "true",
}


@dataclass
class ServerProcess:
    """A started server: its process, URL and log file."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the server's log."""
        return log_tail(self.log_path, chars)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started (SIGTERM, SIGKILL after ``timeout``), then reap it."""
        stop_started(self.process, timeout)


def start_server(cmd: Sequence[str], url: str, health_path: str, log_path: Path, env: dict[str, str] | None = None,
                 deadline_s: float = 90.0, cwd: Path | None = None) -> ServerProcess:
    """Start ``cmd`` in its own process group and wait until ``url + health_path`` answers 200.

    Args:
        cmd: Command line.
        url: Base URL the server will answer on.
        health_path: Path of the health check.
        log_path: File for the server's output.
        env: Extra environment variables.
        deadline_s: Seconds to wait for health.
        cwd: Working directory.

    Returns:
        The running server.
    """
    import httpx

    proc = start_process(list(cmd), log_path, {**os.environ, **(env or {})}, cwd=cwd)
    server = ServerProcess(proc, url, log_path)

    def healthy() -> bool:
        return httpx.get(url + health_path, timeout=2.0).status_code == 200

    try:
        wait_until(healthy, deadline_s, f"server {' '.join(map(str, cmd[:3]))}", proc, server.log_tail)
    except BaseException:
        server.stop()
        raise
    return server


def prefect_server_env(root: Path, scheduler_loop_s: float = 5.0, port: int = 4200,
                       database_url: str | None = None) -> dict[str, str]:
    """Environment of a local Prefect server on 127.0.0.1:``port`` whose state lives under ``root``.

    Its database is SQLite under ``root`` unless ``database_url`` names another (the production
    profile's ``postgresql+asyncpg://...``, see ``deployments/postgres.py``).

    The UI asks ``/ui-settings`` where the API is; without ``PREFECT_UI_API_URL`` the server answers
    ``http://127.0.0.1:4200/api`` whatever its port, so the browser shows "Unable to connect" (or
    another server's data). Every URL setting names this server.
    """
    url = f"http://127.0.0.1:{port}"
    return {
        **TELEMETRY_OFF,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url or f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(scheduler_loop_s),
        # SQLite waits up to this long for a write lock before the API answers 503 (default 10 s).
        # Prefect's own busy_timeout is 60 s; on a busy 2-core machine 10 s gave 503s in CI.
        "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_URL": f"{url}/api",
        "PREFECT_UI_API_URL": f"{url}/api",
        "PREFECT_UI_URL": url,
    }


def start_prefect_server(root: Path, port: int | None = None, ui: bool = True, deadline_s: float = 120.0,
                         scheduler_loop_s: float = 5.0, database_url: str | None = None) -> ServerProcess:
    """Start ``prefect server start`` (SQLite under ``root``) on 127.0.0.1 and wait for /api/health.

    Args:
        root: Folder for the server's database and home.
        port: Port (default: a free one).
        ui: Serve the UI too.
        deadline_s: Seconds to wait for health.
        scheduler_loop_s: How often the scheduler creates runs from schedules.
        database_url: SQLAlchemy URL of the server's database (default: SQLite under ``root``), e.g.
            ``postgresql+asyncpg://user:password@127.0.0.1:5432/prefect``.

    Returns:
        The running server; its API is ``url + "/api"``.
    """
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
           "--ui" if ui else "--no-ui", "--analytics-off"]
    return start_server(cmd, f"http://127.0.0.1:{port}", "/api/health", root / "prefect-server.log",
                        env=prefect_server_env(root, scheduler_loop_s, port, database_url), deadline_s=deadline_s)


def start_mlflow_server(root: Path, port: int | None = None, deadline_s: float = 120.0,
                        backend_store_uri: str | None = None, artifacts_destination: str | None = None
                        ) -> ServerProcess:
    """Start ``mlflow server`` (SQLite + local artifacts under ``root``) on 127.0.0.1.

    The server proxies artifact uploads and downloads (``--artifacts-destination``), so clients
    need no access to the store itself: a folder here, an object store (``s3://...``) in production.

    Args:
        root: Folder for ``mlflow.db``, ``artifacts`` and the log.
        port: Port (default: a free one).
        deadline_s: Seconds to wait for health.
        backend_store_uri: Tracking and registry database (default: SQLite under ``root``), e.g.
            ``postgresql://user:password@127.0.0.1:5432/mlflow``.
        artifacts_destination: Where the server stores artifacts (default: ``root / "artifacts"``).

    Returns:
        The running server.
    """
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", artifacts_destination or str(root / "artifacts"), "--workers", "1"]
    # MLflow 3 starts a huey job runner (seven more Python processes) for its GenAI jobs unless told not to;
    # nothing here uses MLflow jobs, and they slowed the server's start-up under load (147 s seen).
    env = {**TELEMETRY_OFF, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return start_server(cmd, f"http://127.0.0.1:{port}", "/health", root / "mlflow-server.log", env=env,
                        deadline_s=deadline_s)


#: File under the state folder listing the processes ``examples.demo --keep`` left running.
KEPT_FILE = "kept-processes.json"


def record_kept(state: Path, processes: dict[str, tuple[int, str]]) -> Path:
    """Record processes left running (name -> (PID, URL or log)) so that :func:`stop_kept` can stop them.

    Each PID is stored with its process's start time, so a PID reused later by another program is
    never signalled.

    Args:
        state: The state folder.
        processes: What was left running.

    Returns:
        The file written.
    """
    records = []
    for name, (pid, where) in processes.items():
        started = create_time(pid)
        if started is not None:
            records.append({"name": name, "pid": pid, "create_time": started, "where": where})
    return atomic_write_text(state / KEPT_FILE, json.dumps(records, indent=2))


def stop_kept(state: Path, timeout: float = 20.0) -> list[str]:
    """Stop the processes :func:`record_kept` recorded (each with its process group), then forget them.

    Args:
        state: The state folder.
        timeout: Seconds to wait for each to exit after SIGTERM before SIGKILL.

    Returns:
        One line per recorded process: what was stopped, or why not.
    """
    path = state / KEPT_FILE
    if not path.is_file():
        return []
    lines = []
    for record in json.loads(path.read_text()):
        name, pid = record["name"], int(record["pid"])
        proc = find_process(pid, float(record["create_time"]))
        if proc is None:
            reused = create_time(pid) is not None  # a process runs under the PID, created at another time
            lines.append(f"{name} (PID {pid}): already gone" + (" (PID now used by another process)" if reused else ""))
            continue
        stop_processes(process_tree(proc), timeout_s=timeout)
        lines.append(f"{name} (PID {pid}): stopped")
    path.unlink()
    return lines
