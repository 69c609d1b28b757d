"""The front's side towards a backend: its pooled keep-alive connections (one request at a time each)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

try:
    import httptools
except ImportError:  # pragma: no cover - only the front needs it
    httptools = None  # type: ignore[assignment]

UPSTREAM_TIMEOUT_S = 120.0


class Backend:
    """A backend the front forwards to, with its idle connections and counters."""

    __slots__ = ("url", "host", "port", "label", "since", "idle", "inflight", "requests", "retired")

    def __init__(self, url: str, label: dict[str, Any] | None = None) -> None:
        rest = url.split("://", 1)[-1].rstrip("/")
        host, _, port = rest.rpartition(":")
        self.url = url
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.label = label or {}
        self.since = time.time()
        self.idle: list[UpstreamConnection] = []
        self.inflight = 0
        self.requests = 0
        self.retired = False

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()

    def status(self) -> dict[str, Any]:
        return {"url": self.url, "label": self.label, "since": self.since, "inflight": self.inflight,
                "requests": self.requests, "retired": self.retired, "idle_connections": len(self.idle)}


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection from the front to a backend; one request at a time."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Any] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.alive = True
        self.received = False
        self.last_used = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response from the model server: {exc}"))
            self.close()

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body),
                               self.parser.should_keep_alive()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._fail(ConnectionError(f"the model server closed the connection ({exc or 'EOF'})"))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def timeout(self) -> None:
        self._fail(TimeoutError(f"the model server did not answer within {UPSTREAM_TIMEOUT_S:.0f}s"))
        self.close()

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()
