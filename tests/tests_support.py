"""Small helpers shared by tests."""

from __future__ import annotations

import hashlib
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tasks.system import free_port


def file_md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


#: A 127.0.0.1 port nothing listens on (bound then released): a server that is down.
closed_port = free_port


class Receiver(BaseHTTPRequestHandler):
    """A webhook that records every JSON body POSTed to it (notifications under test)."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass
