"""Serving processes are owned: tracked as groups, supervised, confined to a port range, stopped as a whole.

Faults are injected for real (SIGKILL of the ``bentoml serve`` leader, of the front), and every
wait is a condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pydantic import ValidationError

from blocks.bentoml_serving import BentoMLServing
from flows.deploy_model import deploy_model
from tasks.bentoml_serving import start_bento_server, stop_bento_server
from tasks.exceptions import ServingError
from tasks.serving_endpoint import endpoint_id, serving_status, stop_serving
from tasks.serving_processes import ENDPOINT_ENV, group_members, marked_processes
from tasks.system import process_alive

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import serving_block_for, wait_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]

SUPERVISED = "serving-tests-supervised"
RECOVERY_DEADLINE_S = 120


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            continue
    return out


def _answers(url: str, record: dict[str, Any], version: str) -> bool:
    try:
        response = httpx.post(f"{url}/predict", json=record, timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json()["model_version"] == version


@pytest.fixture(scope="module")
def supervised(session_home: Path, serving_registry: Any) -> Any:
    """Version 1 deployed on its own endpoint, with its supervisor; everything stopped after the module."""
    block = serving_block_for(session_home, SUPERVISED, supervise_interval_s=0.5)
    try:
        deploy_model(model_name=serving_registry.model, version="1", alias=None,
                     mlflow_block=serving_registry.mlflow_block, serving_block=SUPERVISED)
        yield block
    finally:
        stop_serving(block)


def test_a_killed_leader_orphans_its_worker_until_the_group_is_stopped(session_home: Path,
                                                                        bentos: dict[str, Any]) -> None:
    block = serving_block_for(session_home, "serving-tests-group")
    backend = start_bento_server.fn(block, bentos["1"])
    workers = [m["pid"] for m in backend.group["members"]]
    assert workers, backend.group
    os.kill(backend.pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(backend.pid), 10, "the leader to die")
    assert _alive(workers), "circus workers outlive a SIGKILLed leader (the bug this guards against)"
    assert stop_bento_server.fn(block, backend, drain=False)
    wait_for(lambda: not _alive(workers), 15, "the orphaned workers to be stopped")
    assert group_members(backend.group) == []
    assert not marked_processes(ENDPOINT_ENV, endpoint_id(block))


def test_sigkill_of_the_backend_leader_is_healed_without_a_person(supervised: Any, bentos: dict[str, Any]) -> None:
    record = bentos["1"].input_example[0]
    before = serving_status(supervised)
    assert before["state"] == "serving" and before["supervisor"]["alive"], before
    leader, workers = before["backend"]["pid"], before["backend"]["workers"]
    assert workers
    killed = time.monotonic()
    os.kill(leader, signal.SIGKILL)
    wait_for(lambda: serving_status(supervised)["backend"]["pid"] != leader or None, RECOVERY_DEADLINE_S,
             "a new backend recorded by the supervisor")
    wait_for(lambda: _answers(supervised.endpoint_url(), record, "1"), RECOVERY_DEADLINE_S,
             "/predict answering 200 with version 1 again")
    print(f"backend leader SIGKILL -> /predict 200 again: {time.monotonic() - killed:.1f}s")  # a figure, not a check
    wait_for(lambda: not _alive([leader, *workers]), 30, "the killed backend's orphaned workers to be stopped")
    after = serving_status(supervised)
    assert after["state"] == "serving" and after["model_version"] == "1"
    assert after["answering"]["model_version"] == "1"
    assert any(r["what"].startswith("backend") and str(leader) in r["why"] for r in after["supervisor"]["restarts"])


def test_sigkill_of_the_front_is_healed_without_a_person(supervised: Any, bentos: dict[str, Any]) -> None:
    record = bentos["1"].input_example[0]
    before = serving_status(supervised)
    front = before["front"]["pid"]
    killed = time.monotonic()
    os.kill(front, signal.SIGKILL)
    wait_for(lambda: serving_status(supervised)["front"]["pid"] != front or None, RECOVERY_DEADLINE_S,
             "a new front recorded by the supervisor")
    wait_for(lambda: _answers(supervised.endpoint_url(), record, "1"), RECOVERY_DEADLINE_S,
             "/predict answering 200 with version 1 again")
    print(f"front SIGKILL -> /predict 200 again: {time.monotonic() - killed:.1f}s")  # a figure, not a check
    after = serving_status(supervised)
    assert after["state"] == "serving" and after["backend"]["pid"] == before["backend"]["pid"]
    assert not process_alive(front)
    assert any(r["what"] == "front" for r in after["supervisor"]["restarts"])


def test_stop_command_stops_every_process_of_the_endpoint(supervised: Any, bentos: dict[str, Any]) -> None:
    status = serving_status(supervised)
    # A backend being started by a deployment (not recorded as live yet) belongs to the endpoint too.
    stray = start_bento_server.fn(supervised, bentos["2"])
    owned = marked_processes(ENDPOINT_ENV, endpoint_id(supervised))
    pids = {p.pid for p in owned}
    assert {status["front"]["pid"], status["backend"]["pid"], status["supervisor"]["pid"], stray.pid} <= pids
    done = subprocess.run([sys.executable, "-m", "tasks.bentoml_serving", "stop", "--block", SUPERVISED],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "supervisor" in done.stdout and "front" in done.stdout
    wait_for(lambda: not _alive(sorted(pids)), 15, "every process of the endpoint to exit")
    assert not marked_processes(ENDPOINT_ENV, endpoint_id(supervised))
    assert serving_status(supervised)["state"] == "not deployed"


def test_status_names_no_version_when_nothing_answers(session_home: Path, serving_registry: Any) -> None:
    name = "serving-tests-unsupervised"
    block = serving_block_for(session_home, name, supervise=False)
    try:
        deploy_model(model_name=serving_registry.model, version="2", alias=None,
                     mlflow_block=serving_registry.mlflow_block, serving_block=name)
        status = serving_status(block)
        assert status["model_version"] == "2" and status["supervisor"]["pid"] is None
        os.kill(status["backend"]["pid"], signal.SIGKILL)
        wait_for(lambda: not process_alive(status["backend"]["pid"]), 10, "the backend leader to die")
        degraded = serving_status(block)
        assert degraded["state"] == "degraded" and degraded["model_version"] is None and degraded["bento"] is None
        assert degraded["deployed"]["model_version"] == "2"
    finally:
        stop_serving(block)
    assert not marked_processes(ENDPOINT_ENV, endpoint_id(block))


def test_backend_ports_stay_inside_the_block_range(session_home: Path, bentos: dict[str, Any]) -> None:
    squatters = []
    try:
        # Find a short run of free ports and occupy all but one: the backend must take that one.
        low = None
        for start in range(42000, 60000, 7):
            socks = []
            try:
                for port in range(start, start + 3):
                    sock = socket.socket()
                    socks.append(sock)
                    sock.bind(("127.0.0.1", port))
            except OSError:
                for sock in socks:
                    sock.close()
                continue
            low = start
            squatters = socks
            break
        assert low is not None
        squatters[1].close()
        block = serving_block_for(session_home, "serving-tests-ports", backend_port_range=(low, low + 2))
        backend = start_bento_server.fn(block, bentos["1"])
        try:
            assert backend.port == low + 1
        finally:
            stop_bento_server.fn(block, backend, drain=False)
        # Now every port of the range is taken: a clear error, and nothing started.
        full = serving_block_for(session_home, "serving-tests-ports-full", backend_port_range=(low, low))
        with pytest.raises(ServingError, match=r"backend_port_range \(\d+, \d+\): all 1 ports are taken"):
            start_bento_server.fn(full, bentos["1"])
        assert not marked_processes(ENDPOINT_ENV, endpoint_id(full))
    finally:
        for sock in squatters:
            sock.close()


@pytest.mark.parametrize("bad", [(5000, 4000), (80, 90), (60000, 70000)])
def test_a_bad_port_range_is_refused_naming_the_field(bad: tuple[int, int]) -> None:
    with pytest.raises(ValidationError, match="backend_port_range"):
        BentoMLServing(backend_port_range=bad)
    assert BentoMLServing(backend_port_range=(39000, 39099)).backend_port_range == (39000, 39099)
