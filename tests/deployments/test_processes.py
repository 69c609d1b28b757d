"""Server processes: what `examples.demo --keep` leaves running is recorded and `examples.demo --stop` stops it,
and the Prefect UI of a server we start talks to that server, whatever its port (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.definitions import PROJECT_ROOT
from deployments.processes import KEPT_FILE, ServerProcess, record_kept, start_prefect_server, stop_kept


def sleeper() -> subprocess.Popen:
    """A process group like a server's: a shell that started a child."""
    return subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)


def test_demo_stop_stops_every_recorded_process_and_its_children(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    server, runner = sleeper(), sleeper()
    children = psutil.Process(server.pid).children(recursive=True)
    try:
        record_kept(state, {"Prefect server": (server.pid, "http://127.0.0.1:1"),
                            "deployment runner": (runner.pid, "runner.log")})
        assert [r["name"] for r in json.loads((state / KEPT_FILE).read_text())] == ["Prefect server",
                                                                                    "deployment runner"]
        out = subprocess.run([sys.executable, "-m", "examples.demo", "--stop"], cwd=PROJECT_ROOT, text=True,
                             capture_output=True, timeout=300, env={**os.environ, "PREFECT_MLOPS_HOME": str(state)})
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"Prefect server (PID {server.pid}): stopped" in out.stdout
        assert f"deployment runner (PID {runner.pid}): stopped" in out.stdout
        assert server.wait(timeout=30) is not None and runner.wait(timeout=30) is not None
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
        assert not (state / KEPT_FILE).exists()
    finally:
        for proc in (server, runner):
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=30)


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    proc = sleeper()
    try:
        record_kept(tmp_path, {"MLflow server": (proc.pid, "http://127.0.0.1:2")})
        path = tmp_path / KEPT_FILE
        records = json.loads(path.read_text())
        records[0]["create_time"] -= 3600  # as if the recorded process died and its PID went to this one
        path.write_text(json.dumps(records))
        assert stop_kept(tmp_path) == [f"MLflow server (PID {proc.pid}): already gone (PID now used by another "
                                       "process)"]
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_prefect_server(tmp_path_factory.mktemp("ui-server"), ui=True)
    yield server
    server.stop()


def test_ui_settings_name_the_server_itself(ui_server: ServerProcess) -> None:
    assert not ui_server.url.endswith(":4200")  # a random port, where the old default would be wrong
    settings = httpx.get(f"{ui_server.url}/ui-settings", timeout=10).json()
    assert settings["api_url"] == f"{ui_server.url}/api"
    assert httpx.get(f"{settings['api_url']}/health", timeout=10).json() is True


def test_ui_pages_are_served(ui_server: ServerProcess) -> None:
    page = httpx.get(f"{ui_server.url}/", timeout=10, follow_redirects=True)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_server_log_has_no_telemetry_error(ui_server: ServerProcess) -> None:
    assert "Failed to send telemetry" not in Path(ui_server.log_path).read_text(errors="replace")
