"""Start real servers on free 127.0.0.1 ports, wait on health checks, stop them by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A server started by a fixture: its process, URL and log file."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's whole process group by PID, then wait for it."""
        if self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=timeout)


def wait_until(check: Callable[[], bool], deadline_s: float, what: str,
               process: subprocess.Popen | None = None, log: Callable[[], str] | None = None,
               interval: float = 0.2) -> None:
    """Poll ``check`` until it returns True, failing with a clear message at the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log() if log else ''}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not healthy after {deadline_s:.0f}s:\n{log() if log else ''}")


def start_server(cmd: Sequence[str], url: str, health_path: str, log_path: Path,
                 env: dict[str, str] | None = None, deadline_s: float = 90.0,
                 cwd: Path | None = None) -> ServerProcess:
    """Start ``cmd`` in its own process group and wait for ``url + health_path`` to answer 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        list(cmd), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )
    server = ServerProcess(proc, url, log_path)

    def healthy() -> bool:
        return httpx.get(url + health_path, timeout=2.0).status_code == 200

    try:
        wait_until(healthy, deadline_s, f"server {' '.join(cmd[:3])}", proc, server.log_tail)
    except BaseException:
        server.stop()
        raise
    return server
