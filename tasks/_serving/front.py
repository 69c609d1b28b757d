"""The stable front: an HTTP/1.1 reverse proxy on the serving port, zero-downtime switch between backends.

It forwards every request to the current backend (``bentoml serve`` on a private 127.0.0.1 port) over
pooled keep-alive connections. ``POST /-/mlops/switch`` (admin token) repoints it atomically: requests
already sent finish on the old backend, new ones go to the new one, no client connection is dropped.
A plain program, not a Prefect task: ``python -m tasks._serving.front --host 127.0.0.1 --port 3000``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from http import HTTPStatus
from pathlib import Path
from typing import Any

try:
    import httptools
except ImportError:  # pragma: no cover - only the front needs it
    httptools = None  # type: ignore[assignment]

from .common import ADMIN_PREFIX, FRONT_TOKEN_ENV, TOKEN_HEADER, json_dumps
from .upstream import UPSTREAM_TIMEOUT_S, Backend, UpstreamConnection

logger = logging.getLogger("mlops.serving")

_HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
                          b"upgrade", b"content-length", b"expect"})
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_IDLE_MAX_S = 2.0  # below uvicorn's 5 s keep-alive timeout: never reuse a connection the backend may be closing
_MAX_BODY = 64 * 1024 * 1024



class Front:
    """The stable endpoint's state: the current backend, retired ones still draining, counters."""

    def __init__(self, token: str | None) -> None:
        self.token = token.encode() if token else None
        self.backend: Backend | None = None
        self.retired: list[Backend] = []
        self.requests = 0
        self.errors = 0
        self.started = time.time()
        self.clients: set[_ClientConnection] = set()

    async def _acquire(self, backend: Backend) -> tuple[UpstreamConnection, bool]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while backend.idle:
            conn = backend.idle.pop()
            if conn.alive and now - conn.last_used < _IDLE_MAX_S:
                return conn, True
            conn.close()
        _, conn = await loop.create_connection(UpstreamConnection, backend.host, backend.port)
        return conn, False

    def _release(self, backend: Backend, conn: UpstreamConnection, keep_alive: bool) -> None:
        if keep_alive and conn.alive and not backend.retired and len(backend.idle) < 512:
            conn.last_used = asyncio.get_running_loop().time()
            backend.idle.append(conn)
        else:
            conn.close()

    async def forward(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request to the current backend and return its response."""
        backend = self.backend
        if backend is None:
            return self._error(503, "no model is deployed on this endpoint yet: run the deploy-model flow")
        backend.inflight += 1
        backend.requests += 1
        try:
            upstream_method = b"GET" if method == b"HEAD" else method
            data = b"".join([upstream_method, b" ", url, b" HTTP/1.1\r\n",
                             *[b"%s: %s\r\n" % (k, v) for k, v in headers if k.lower() not in _HOP_HEADERS],
                             b"content-length: %d\r\n\r\n" % len(body), body])
            loop = asyncio.get_running_loop()
            for attempt in (0, 1):
                try:
                    conn, reused = await self._acquire(backend)
                except OSError as exc:
                    return self._error(502, f"cannot reach the model server at {backend.url}: {exc}")
                conn.waiter = loop.create_future()
                conn.received = False
                conn.transport.write(data)
                timer = loop.call_later(UPSTREAM_TIMEOUT_S, conn.timeout)
                try:
                    status, rheaders, rbody, keep_alive = await conn.waiter
                except TimeoutError as exc:
                    return self._error(504, str(exc))
                except ConnectionError as exc:
                    conn.close()
                    if reused and not conn.received and attempt == 0:
                        continue  # a pooled connection the backend had just closed: send again on a new one
                    return self._error(502, str(exc))
                finally:
                    timer.cancel()
                self._release(backend, conn, keep_alive)
                if method == b"HEAD":
                    rbody = b""
                return status, rheaders, rbody
            return self._error(502, "the model server closed the connection")  # pragma: no cover
        finally:
            backend.inflight -= 1
            if backend.retired and backend.inflight == 0:
                backend.close_idle()

    def _error(self, status: int, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.errors += 1
        return status, [(b"content-type", b"application/json")], json_dumps({"error": message})

    def admin(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
              body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Answer the admin API: ``GET status``, ``POST switch`` (``{"backend", "label"}``), ``POST clear``."""
        given = next((v for k, v in headers if k.lower() == TOKEN_HEADER), b"")
        if self.token is None or not hmac.compare_digest(given, self.token):
            return 403, [(b"content-type", b"application/json")], json_dumps({"error": "admin token required"})
        action = url[len(ADMIN_PREFIX):].split(b"?", 1)[0]
        if action == b"status" and method == b"GET":
            payload = self.status()
        elif action in (b"switch", b"clear") and method == b"POST":
            previous = self.backend
            if action == b"switch":
                try:
                    request = json.loads(body or b"{}")
                    self.backend = Backend(str(request["backend"]), request.get("label"))
                except (ValueError, KeyError, TypeError) as exc:
                    return 400, [(b"content-type", b"application/json")], json_dumps(
                        {"error": f"switch needs a JSON body with 'backend' (http://host:port): {exc}"})
            else:
                self.backend = None
            if previous is not None:
                previous.retired = True
                if previous.inflight == 0:
                    previous.close_idle()
                self.retired = [b for b in [*self.retired, previous] if b.inflight > 0][-10:] or [previous]
            logger.warning("front: backend %s -> %s", previous.url if previous else None,
                           self.backend.url if self.backend else None)
            payload = {"backend": self.backend.url if self.backend else None,
                       "previous": previous.status() if previous else None}
        else:
            return 404, [(b"content-type", b"application/json")], json_dumps({"error": "unknown admin action"})
        return 200, [(b"content-type", b"application/json")], json_dumps(payload)

    def status(self) -> dict[str, Any]:
        """Return the current backend, the draining ones and the counters."""
        return {"pid": os.getpid(), "started": self.started, "requests": self.requests, "errors": self.errors,
                "backend": self.backend.status() if self.backend else None,
                "retired": [b.status() for b in self.retired], "clients": len(self.clients)}


class _ClientConnection(asyncio.Protocol):
    """One client connection to the front: parses requests, answers them in order."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.queue: deque[tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, bool, bool]] = deque()
        self.busy = False
        self.paused = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.front.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.clients.discard(self)
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_and_close(501, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reply_and_close(400, f"malformed HTTP request: {exc}")

    def _reply_and_close(self, status: int, message: str) -> None:
        body = json_dumps({"error": message})
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, _REASONS.get(status, b""), len(body), body))
        self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        for name, value in self.headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size <= _MAX_BODY:
            self.body.append(body)

    def on_message_complete(self) -> None:
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.queue.append((self.parser.get_method(), self.url, self.headers, body, self.parser.should_keep_alive(),
                           self.size > _MAX_BODY))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._serve())
        if len(self.queue) > 16 and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    async def _serve(self) -> None:
        front = self.front
        try:
            while self.queue:
                method, url, headers, body, keep_alive, too_big = self.queue.popleft()
                front.requests += 1
                if too_big:
                    status, rheaders, rbody = front._error(413, f"body: larger than {_MAX_BODY} bytes")
                elif url.startswith(ADMIN_PREFIX):
                    status, rheaders, rbody = front.admin(method, url, headers, body)
                else:
                    status, rheaders, rbody = await front.forward(method, url, headers, body)
                if self.transport.is_closing():
                    return
                out = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"")),
                       *[b"%s: %s\r\n" % (k, v) for k, v in rheaders if k.lower() not in _HOP_HEADERS],
                       b"content-length: %d\r\n" % len(rbody)]
                if not keep_alive:
                    out.append(b"connection: close\r\n")
                out.append(b"\r\n")
                out.append(rbody)
                self.transport.write(b"".join(out))
                if not keep_alive:
                    self.transport.close()
                    return
                if self.paused and len(self.queue) < 4:
                    self.paused = False
                    self.transport.resume_reading()
        finally:
            self.busy = False


async def _serve_front(host: str, port: int, token: str | None, backend: str | None, ready_file: str | None) -> None:
    loop = asyncio.get_running_loop()
    front = Front(token)
    if backend:
        front.backend = Backend(backend)
    server = await loop.create_server(lambda: _ClientConnection(front), host, port, reuse_address=True, backlog=2048)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file:
        Path(ready_file).write_text(json.dumps({"pid": os.getpid(), "port": port}))
    logger.warning("front: serving on http://%s:%d (pid %d)", host, port, os.getpid())
    await stop.wait()
    server.close()
    deadline = loop.time() + 10
    while any(c.busy for c in front.clients) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for backend_ in [front.backend, *front.retired]:
        if backend_ is not None:
            backend_.close_idle()


def run_front(host: str, port: int, token: str | None = None, backend: str | None = None,
              ready_file: str | None = None) -> None:
    """Run the stable endpoint until SIGTERM (uses uvloop when installed).

    Args:
        host: Interface to bind (127.0.0.1 unless the serving block says otherwise).
        port: The stable port.
        token: Admin token (``$MLOPS_FRONT_TOKEN``); without one the admin API is closed.
        backend: Backend to forward to from the start (``http://127.0.0.1:PORT``).
        ready_file: File written once the port is bound.
    """
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(_serve_front(host, port, token, backend, ready_file))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tasks._serving.front --host H --port P [--backend URL] [--ready-file F]``."""
    parser = argparse.ArgumentParser(prog="mlops-front", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--ready-file", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        run_front(args.host, args.port, os.environ.get(FRONT_TOKEN_ENV), args.backend, args.ready_file)
    except OSError as exc:
        print(f"front: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
