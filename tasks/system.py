"""Host helpers, each written once for every layer: free ports, waiting with a deadline, processes, atomic writes.

Used by the serving control (``tasks/bentoml_serving.py``, ``tasks/serving_processes.py``), the
local servers of ``deployments/processes.py``, the data tasks, the demo, the benchmarks and the
tests. It lives in ``tasks/`` because the layering is blocks -> tasks -> flows -> deployments and
nothing imports upward. The serving runtime (the ``tasks/_serving/`` package, which every bento
copies whole) keeps its own few lines on purpose: a bento must run without this project.

Processes are handled with ``psutil`` (portable, no ``/proc``); a PID is always checked against
the creation time recorded with it, so a PID reused by another program is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil

#: psutil's create_time of one process is rounded differently by platform; two reads agree within this.
CREATE_TIME_TOLERANCE_S = 0.05

__all__ = ["CREATE_TIME_TOLERANCE_S", "ProcessExited", "atomic_path", "atomic_write_text", "create_time",
           "find_process", "free_port", "free_port_in", "log_tail", "process_alive", "process_tree", "running",
           "signal_processes", "start_process", "stop_processes", "stop_started", "tree_rss_mb", "wait_gone",
           "wait_until"]


# -- ports ---------------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (the OS's choice).

    Examples:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_in(port_range: tuple[int, int], host: str = "127.0.0.1", exclude: Iterable[int] = ()) -> int | None:
    """Return a port inside ``port_range`` (inclusive) that can be bound now, or None when all are taken.

    Examples:
        >>> 20000 <= free_port_in((20000, 20100)) <= 20100
        True
    """
    skip = set(exclude)
    candidates = [p for p in range(port_range[0], port_range[1] + 1) if p not in skip]
    random.shuffle(candidates)  # two deployments choosing at once rarely pick the same port
    return next((p for p in candidates if _bindable(host, p)), None)


# -- waiting -------------------------------------------------------------------------------------------
class ProcessExited(RuntimeError):
    """The process a wait depended on exited before the condition held."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


def _http_errors() -> tuple[type[BaseException], ...]:
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency
        return (OSError,)
    return (httpx.HTTPError, OSError)


def wait_until(check: Callable[[], Any], deadline_s: float, what: str, process: subprocess.Popen | None = None,
               log: Callable[[], str] | None = None, interval: float = 0.2,
               ignore: tuple[type[BaseException], ...] | None = None,
               done: Callable[[Any], bool] = bool) -> Any:
    """Poll ``check`` until ``done(check())``; return that value, or fail with a clear message at the deadline.

    Args:
        check: Returns the awaited value (or something ``done`` rejects while not there yet).
        deadline_s: Seconds to wait at most.
        what: What is awaited, for the error message.
        process: Fail at once if this process exits.
        log: Returns log text to add to the error message.
        interval: Seconds between checks.
        ignore: Exceptions of ``check`` that mean "not yet" (default: connection errors, httpx's and OSError).
        done: Whether a value of ``check`` is the awaited one (default: it is truthy).

    Returns:
        The first value of ``check`` that ``done`` accepts.

    Raises:
        TimeoutError: At the deadline.
        ProcessExited: If ``process`` exits first.

    Examples:
        >>> wait_until(lambda: 42, 1.0, "the answer")
        42
    """
    errors = _http_errors() if ignore is None else ignore
    end = time.monotonic() + deadline_s
    while True:
        if process is not None and process.poll() is not None:
            raise ProcessExited(f"{what}: process exited with {process.returncode}:\n{log() if log else ''}",
                                process.returncode)
        try:
            value = check()
            if done(value):
                return value
        except errors:
            pass
        if time.monotonic() >= end:
            raise TimeoutError(f"{what}: not ready after {deadline_s:.0f}s:\n{log() if log else ''}")
        time.sleep(interval)


# -- processes -----------------------------------------------------------------------------------------
def start_process(cmd: list[str], log_file: str | Path, env: dict[str, str] | None = None,
                  cwd: str | Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session, stdin closed, stdout and stderr appended to ``log_file``.

    Args:
        cmd: Command line.
        log_file: File for its output (its folder is created).
        env: The whole environment of the process (None: this process's).
        cwd: Working directory.
    """
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=cwd, env=env)


def create_time(pid: int) -> float | None:
    """Return the creation time of ``pid`` (None: it does not exist)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def running(proc: psutil.Process) -> bool:
    """Return whether ``proc`` still runs (a zombie does not)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_process(pid: int | None, create_time: float | None = None) -> psutil.Process | None:
    """Return the running process ``pid`` if it is the one created at ``create_time`` (when given)."""
    if not pid:
        return None
    _reap(int(pid))
    try:
        proc = psutil.Process(int(pid))
        if create_time is not None and abs(proc.create_time() - float(create_time)) > CREATE_TIME_TOLERANCE_S:
            return None  # the PID was reused by another program
    except psutil.Error:
        return None
    return proc if running(proc) else None


def process_alive(pid: int | None, marker: str | None = None, create_time: float | None = None) -> bool:
    """Return whether ``pid`` runs (not a zombie), was created at ``create_time`` and runs ``marker``.

    ``create_time`` (when given) guards against a reused PID; ``marker`` must be in the command line.

    Examples:
        >>> process_alive(os.getpid())
        True
        >>> process_alive(None)
        False
    """
    proc = find_process(pid, create_time)
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


def process_tree(proc: psutil.Process) -> list[psutil.Process]:
    """Return ``proc`` and its running descendants."""
    with contextlib.suppress(psutil.Error):
        return [proc, *(c for c in proc.children(recursive=True) if running(c))]
    return [proc]


def tree_rss_mb(pids: Iterable[int | None]) -> float | None:
    """Return the resident memory (MiB) of these processes and their descendants, each counted once.

    Args:
        pids: Root PIDs (None and gone PIDs are skipped).

    Returns:
        The sum of RSS, or None when none of the processes runs (nothing measured).

    Examples:
        >>> tree_rss_mb([os.getpid()]) > 0
        True
        >>> tree_rss_mb([None]) is None
        True
    """
    seen: dict[int, int] = {}
    for pid in pids:
        proc = find_process(pid)
        if proc is None:
            continue
        for member in process_tree(proc):
            with contextlib.suppress(psutil.Error):
                seen.setdefault(member.pid, member.memory_info().rss)
    return sum(seen.values()) / 2**20 if seen else None


def signal_processes(procs: Iterable[psutil.Process], sig: int) -> None:
    """Send ``sig`` to each of ``procs`` (those already gone are skipped)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to ``timeout_s`` until ``procs`` exited (reaping our children); return those still running."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        for proc in alive:
            _reap(proc.pid)
        time.sleep(0.05)
        alive = [p for p in alive if running(p)]
    return alive


def stop_processes(procs: list[psutil.Process], timeout_s: float = 20.0) -> list[int]:
    """SIGTERM ``procs``, wait up to ``timeout_s``, SIGKILL what is left; return the PIDs that were running."""
    procs = [p for p in procs if running(p)]
    signal_processes(procs, signal.SIGTERM)
    left = wait_gone(procs, timeout_s)
    if left:
        signal_processes(left, signal.SIGKILL)
        wait_gone(left, 10.0)
    return [p.pid for p in procs]


def stop_started(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Stop a process this program started and every process it started (SIGTERM, then SIGKILL); reap it."""
    if proc.poll() is not None:
        return
    found = find_process(proc.pid)
    if found is not None:
        stop_processes(process_tree(found), timeout_s=timeout_s)
    proc.wait(timeout=timeout_s)


# -- files ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path`` in one step.

    Readers see the old file or the new one, never a part; on an error the temporary file is removed
    and ``path`` is untouched.

    Args:
        path: The file to write.
        mode: Permissions of the new file (for example 0o600 for a secret); None: the umask's default.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if mode is not None:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def log_tail(path: str | Path, chars: int = 3000) -> str:
    """Return the last ``chars`` characters of a (log) file; empty when it cannot be read."""
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); return the path."""
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text)
    return Path(path)
