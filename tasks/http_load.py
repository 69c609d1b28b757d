"""A bounded HTTP/1.1 load generator over raw keep-alive sockets (asyncio; uvloop when installed).

Shared by the infra validation of the rollout (:mod:`tasks.infra_validation`) and the serving
benchmarks (``benchmarks/bench_serving.py --load-client``, ``benchmarks/bench_load.py``). Raw
sockets rather than an HTTP client library: on this 2-core machine httpx spends more CPU per
request than the endpoint it measures, so the load generator would measure itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

__all__ = ["LOCAL_HOSTS", "run_http_load"]

#: Hosts the load generator may target: it never loads another machine.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


async def _connection(host: str, port: int, request: bytes, stop_at: float, state: dict[str, Any],
                      record: bool) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at and state["sent"] < state["limit"]:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            state["sent"] += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"content-length:")
            length = int(head[at + 15:head.index(b"\r\n", at)]) if at >= 0 else 0
            if length:
                await reader.readexactly(length)
            if record:
                state["latencies"].append(time.perf_counter() - started)
                if status != 200:
                    state["errors"] += 1
            if b"connection: close" in lower:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError):
            if record:
                state["failed"] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)  # a refused connection must not spin the loop
    if writer is not None:
        writer.close()


async def load(host: str, port: int, path: str, body: bytes, connections: int, duration: float, warmup: float,
               limit: int) -> dict[str, Any]:
    """Send ``body`` as POSTs to ``path`` from ``connections`` connections; return the measured figures.

    Returns:
        ``{"requests", "errors", "rps", "p50_ms", "p99_ms", "seconds"}``: ``requests`` sent in the measured
        phase, ``errors`` among them (not answered 200, or the connection failed), ``rps`` answered (200)
        requests per second; p50 / p99 of the answered requests, NaN when none was answered.
    """
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    warm = {"sent": 0, "limit": limit, "latencies": [], "errors": 0, "failed": 0}
    now = time.perf_counter()
    if warmup > 0:
        await asyncio.gather(*(_connection(host, port, request, now + warmup, warm, False)
                               for _ in range(connections)))
    state = {"sent": 0, "limit": limit, "latencies": [], "errors": 0, "failed": 0}
    started = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, request, started + duration, state, True)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - started
    lat = sorted(state["latencies"])

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    ok = len(lat) - state["errors"]
    return {"requests": len(lat) + state["failed"], "errors": state["errors"] + state["failed"], "rps": ok / elapsed,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "seconds": elapsed}


def run_http_load(host: str, port: int, path: str, body: bytes, connections: int, duration: float,
                  warmup: float = 1.0, limit: int = 500_000) -> dict[str, Any]:
    """Run :func:`load` to completion in its own thread and event loop (safe inside a running loop).

    Args:
        host: 127.0.0.1, localhost or ::1 (nothing else: the generator only loads this machine).
        port: Port of the server.
        path: Request path (e.g. ``/predict``).
        body: JSON body of every request.
        connections: Keep-alive connections sending at once.
        duration: Seconds of measured load.
        warmup: Seconds of unmeasured load first.
        limit: Most requests in the measured phase.

    Returns:
        The figures of :func:`load`.

    Raises:
        ValueError: If ``host`` is not this machine.

    Examples:
        >>> run_http_load("127.0.0.1", 3000, "/predict", b'{"tenure": 3}', 8, 2.0)  # doctest: +SKIP
        {'requests': 1504, 'errors': 0, 'rps': 751.2, 'p50_ms': 9.8, 'p99_ms': 31.0, 'seconds': 2.0}
    """
    if host not in LOCAL_HOSTS:
        raise ValueError(f"the load generator only targets this machine ({LOCAL_HOSTS}), not {host!r}")
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with bentoml's dependencies
        runner = asyncio.run
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out["figures"] = runner(load(host, port, path, body, connections, duration, warmup, limit))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=work, name="http-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["figures"]
