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
The plain process helpers (start, find, liveness, stop) are those of ``tasks/system.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psutil

from tasks.system import (
    create_time,
    find_process,
    running,
    signal_processes,
    start_process,
    stop_processes,
    wait_gone,
)

GROUP_ENV = "MLOPS_SERVING_GROUP"
ENDPOINT_ENV = "MLOPS_SERVING_ENDPOINT"


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
    proc = start_process(cmd, log_file, {**env, GROUP_ENV: group_id, ENDPOINT_ENV: endpoint}, cwd=cwd)
    return proc, {"id": group_id, "pid": proc.pid, "create_time": create_time(proc.pid), "members": []}


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
        if _env_of(proc).get(key) == value and running(proc):
            found.append(proc)
    return found


def group_members(group: dict[str, Any] | None, scan: bool = True) -> list[psutil.Process]:
    """Return the running processes of a recorded group: leader, recorded members, children, marked ones."""
    if not group:
        return []
    found: dict[int, psutil.Process] = {}
    leader = find_process(group.get("pid"), group.get("create_time"))
    records = [{"pid": group.get("pid"), "create_time": group.get("create_time")}, *(group.get("members") or [])]
    for rec in records:
        proc = find_process(rec.get("pid"), rec.get("create_time"))
        if proc is not None:
            found[proc.pid] = proc
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            for child in leader.children(recursive=True):
                # A child started as its own group (the supervisor's restarted front / backend) is not ours.
                if running(child) and _env_of(child).get(GROUP_ENV) in (None, group.get("id")):
                    found[child.pid] = child
    if scan and group.get("id"):
        for proc in marked_processes(GROUP_ENV, str(group["id"])):
            found[proc.pid] = proc
    return list(found.values())


def record_members(group: dict[str, Any]) -> dict[str, Any]:
    """Return the group record with its current members (call once the group is up: its workers exist)."""
    members = [{"pid": p.pid, "create_time": create_time(p.pid)} for p in group_members(group)
               if p.pid != group.get("pid")]
    return {**group, "members": members}


def group_alive(group: dict[str, Any] | None) -> bool:
    """Return whether the group's leader runs (the process that answers for the group)."""
    return bool(group) and find_process(group.get("pid"), group.get("create_time")) is not None


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
        signal_processes(leader, signal.SIGTERM)
        wait_gone(members, timeout_s)
    stop_processes([p for p in members if running(p)], timeout_s=5.0 if leader else timeout_s)
    # A worker the leader spawned while we stopped it is found by its marker.
    stop_processes(group_members(group), timeout_s=5.0)
    return [p.pid for p in members]
