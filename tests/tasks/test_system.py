"""The host helpers of tasks/system.py, on real sockets, files and processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tasks.system import (
    ProcessExited,
    atomic_path,
    atomic_write_text,
    find_process,
    free_port,
    free_port_in,
    process_alive,
    stop_started,
    wait_until,
)


def test_free_port_in_skips_taken_and_excluded_ports() -> None:
    base = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base))
        taken.listen()
        assert free_port_in((base, base)) is None
    assert free_port_in((base, base), exclude=[base]) is None


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "state.json", "old", mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_wait_until_fails_at_once_when_the_process_exits(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(ProcessExited, match="exited with 3") as info:
        wait_until(lambda: False, 120, "a server that crashes", process=proc, interval=0.05)
    assert info.value.returncode == 3


def test_wait_until_names_what_it_waited_for_at_the_deadline() -> None:
    with pytest.raises(TimeoutError, match="the answer: not ready after 0s"):
        wait_until(lambda: None, 0.1, "the answer", interval=0.02)
    assert wait_until(lambda: 0, 1, "zero", done=lambda v: v is not None) == 0


def test_stop_started_stops_the_process_and_its_children() -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    child = wait_until(lambda: psutil.Process(proc.pid).children(), 30, "the child", ignore=(psutil.Error,))[0]
    child_started = child.create_time()
    try:
        stop_started(proc, timeout_s=10)
        assert proc.returncode is not None
        assert not process_alive(child.pid, create_time=child_started)
        assert find_process(proc.pid) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_a_reused_pid_is_not_alive() -> None:
    me = psutil.Process()
    assert process_alive(me.pid, create_time=me.create_time())
    assert not process_alive(me.pid, create_time=me.create_time() - 3600)
    assert not process_alive(me.pid, marker="no such command line")
