"""Processes of a serving endpoint on ``psutil``: start them marked, find every member, stop them as a group.

A serving process tree is not one process group: ``bentoml serve`` runs a circus arbiter whose
workers call ``os.setsid()`` (circus ``Process.spawn``), so ``killpg`` of the leader misses them,
and after a SIGKILL of the leader they are re-parented to init and keep serving on the inherited
socket. So every process started here carries two environment variables that its children inherit:

* ``MLOPS_SERVING_GROUP``: one id per process tree (a backend and its workers, a front, a supervisor);
* ``MLOPS_SERVING_ENDPOINT``: the endpoint it belongs to (its state file).

A group is recorded as ``{"id", "pid", "create_time", "members": [{"pid", "create_time"}]}``;
:func:`group_members` finds its running processes from the recorded PIDs (guarded by their
creation time against PID reuse), the leader's ``psutil`` children, and the marker, so a worker
respawned after the record was written is still found. Nothing is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

GROUP_ENV = "MLOPS_SERVING_GROUP"
ENDPOINT_ENV = "MLOPS_SERVING_ENDPOINT"
_CT_TOLERANCE = 0.05  # seconds: psutil's create_time is rounded differently by platform


def new_group_id() -> str:
    """Return a fresh id for a process tree."""
    return uuid.uuid4().hex


def start_group(cmd: list[str], log_file: str | Path, env: dict[str, str], endpoint: str, group_id: str | None = None,
                cwd: str | None = None) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start ``cmd`` in its own session, marked with its group and endpoint, output appended to ``log_file``.

    Returns:
        The ``Popen`` and the group record (see the module docstring).
    """
    group_id = group_id or new_group_id()
    full_env = {**env, GROUP_ENV: group_id, ENDPOINT_ENV: endpoint}
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=cwd, env=full_env)
    return proc, {"id": group_id, "pid": proc.pid, "create_time": _create_time(proc.pid), "members": []}


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _process(pid: int | None, create_time: float | None = None) -> psutil.Process | None:
    """Return the running process ``pid`` if it is the one created at ``create_time`` (when given)."""
    if not pid:
        return None
    _reap(int(pid))
    try:
        proc = psutil.Process(int(pid))
        if create_time is not None and abs(proc.create_time() - float(create_time)) > _CT_TOLERANCE:
            return None  # the PID was reused by another program
    except psutil.Error:
        return None
    return proc if _running(proc) else None


def process_alive(pid: int | None, marker: str | None = None, create_time: float | None = None) -> bool:
    """Return whether ``pid`` runs (not a zombie), was created at ``create_time`` and runs ``marker``.

    ``create_time`` (when given) guards against a reused PID; ``marker`` must be in the command line.

    Examples:
        >>> process_alive(os.getpid())
        True
        >>> process_alive(None)
        False
    """
    proc = _process(pid, create_time)
    if proc is None:
        return False
    if marker is None:
        return True
    try:
        return marker in " ".join(proc.cmdline())
    except psutil.AccessDenied:
        return True
    except psutil.Error:
        return False


def _env_of(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except psutil.Error:
        return {}


def marked_processes(key: str, value: str) -> list[psutil.Process]:
    """Return the running processes whose environment has ``key=value`` (the marker of a group or endpoint)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        if _env_of(proc).get(key) == value and _running(proc):
            found.append(proc)
    return found


def group_members(group: dict[str, Any] | None, scan: bool = True) -> list[psutil.Process]:
    """Return the running processes of a recorded group: leader, recorded members, children, marked ones."""
    if not group:
        return []
    found: dict[int, psutil.Process] = {}
    leader = _process(group.get("pid"), group.get("create_time"))
    records = [{"pid": group.get("pid"), "create_time": group.get("create_time")}, *(group.get("members") or [])]
    for rec in records:
        proc = _process(rec.get("pid"), rec.get("create_time"))
        if proc is not None:
            found[proc.pid] = proc
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            for child in leader.children(recursive=True):
                # A child started as its own group (the supervisor's restarted front / backend) is not ours.
                if _running(child) and _env_of(child).get(GROUP_ENV) in (None, group.get("id")):
                    found[child.pid] = child
    if scan and group.get("id"):
        for proc in marked_processes(GROUP_ENV, str(group["id"])):
            found[proc.pid] = proc
    return list(found.values())


def record_members(group: dict[str, Any]) -> dict[str, Any]:
    """Return the group record with its current members (call once the group is up: its workers exist)."""
    members = [{"pid": p.pid, "create_time": _create_time(p.pid)} for p in group_members(group)
               if p.pid != group.get("pid")]
    return {**group, "members": members}


def group_alive(group: dict[str, Any] | None) -> bool:
    """Return whether the group's leader runs (the process that answers for the group)."""
    return bool(group) and _process(group.get("pid"), group.get("create_time")) is not None


def _signal(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _running(p)]
    while alive and time.monotonic() < deadline:
        for proc in alive:
            _reap(proc.pid)
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    return alive


def stop_processes(procs: list[psutil.Process], timeout_s: float = 20.0) -> list[int]:
    """SIGTERM ``procs``, wait up to ``timeout_s``, SIGKILL what is left; return the PIDs that were running."""
    procs = [p for p in procs if _running(p)]
    _signal(procs, signal.SIGTERM)
    left = _wait_gone(procs, timeout_s)
    if left:
        _signal(left, signal.SIGKILL)
        _wait_gone(left, 10.0)
    return [p.pid for p in procs]


def stop_group(group: dict[str, Any] | None, timeout_s: float = 20.0) -> list[int]:
    """Stop every process of a group: the leader first (a graceful stop lets it stop its workers), then the rest.

    Args:
        group: The group record (see the module docstring).
        timeout_s: Grace period of the leader before the members are signalled and then killed.

    Returns:
        The PIDs that were running (empty: the group had already exited).
    """
    members = group_members(group)
    if not members:
        return []
    leader = [p for p in members if p.pid == (group or {}).get("pid")]
    if leader:
        _signal(leader, signal.SIGTERM)
        _wait_gone(members, timeout_s)
    stop_processes([p for p in members if _running(p)], timeout_s=5.0 if leader else timeout_s)
    # A worker the leader spawned while we stopped it is found by its marker.
    stop_processes(group_members(group), timeout_s=5.0)
    return [p.pid for p in members]


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", port_range: tuple[int, int] | None = None,
              exclude: Iterable[int] = ()) -> int | None:
    """Return a port that can be bound now: any (the OS's choice) or one inside ``port_range``.

    Returns:
        The port, or None when every port of ``port_range`` is taken (or excluded).

    Examples:
        >>> 1024 <= free_port(port_range=(20000, 20100)) <= 20100
        True
    """
    if port_range is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return sock.getsockname()[1]
    skip = set(exclude)
    candidates = [p for p in range(port_range[0], port_range[1] + 1) if p not in skip]
    random.shuffle(candidates)  # two deployments choosing at once rarely pick the same port
    return next((p for p in candidates if _bindable(host, p)), None)
