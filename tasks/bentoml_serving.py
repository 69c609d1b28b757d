"""Deploying a bento: start a ``bentoml serve`` backend, check it, swap it behind one stable URL, stop the old one.

A deployment makes sure the **front** runs (:func:`ensure_front`: it owns the stable port and
forwards every request to the current backend over keep-alive connections), starts the new
backend (:func:`start_bento_server`) and waits for ``/readyz`` (with a deadline), sends a smoke
request built from the model's input example (``tasks/serving_checks.py``), and only then tells
the front to switch (:func:`switch_live_backend`); the old backend finishes the requests it has
(drain) and is stopped with all its processes (:func:`stop_bento_server`). Clients keep their
connections to the front throughout, so a swap drops no request.

The endpoint's recorded state, its status and ``stop_serving`` are in ``tasks/serving_endpoint.py``;
the supervisor in ``tasks/bentoml_supervisor.py``. Command line: ``python -m tasks.bentoml_serving
stop | status | heal | supervise`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.bentoml_serving import BentoMLServing
from tasks.bentoml_packaging import BentoInfo
from tasks.exceptions import ServingError
from tasks.logs import run_logger
from tasks.serving_endpoint import (
    FRONT_MARKER,
    HISTORY_KEPT,
    BackendInfo,
    backend_alive,
    backend_marker,
    endpoint_id,
    front_alive,
    front_request,
    group_of,
    now_iso,
    read_state,
    serving_status,
    state_lock,
    stop_serving,
    write_state,
)
from tasks.serving_processes import record_members, start_group, stop_group
from tasks.serving_standby import backend_ready, launch_backend
from tasks.system import ProcessExited, log_tail, wait_until

_FRONT_MODULE = "tasks._serving.front"

__all__ = ["SwitchResult", "ensure_front", "main", "start_bento_server", "stop_bento_server", "switch_live_backend"]


class SwitchResult(BaseModel):
    """What the stable endpoint serves after a switch, and what it replaced."""

    url: str
    live: BackendInfo
    previous: BackendInfo | None
    since: str


def _front_ok(state: dict[str, Any], serving: BentoMLServing) -> bool:
    front = state.get("front") or {}
    if not front_alive(front):
        return False
    try:
        front_request(serving.endpoint_url(), front["token"], "GET", "status", timeout_s=2.0)
    except Exception:  # noqa: BLE001 - any failure means "not our healthy front"
        return False
    return True


@task(name="ensure-serving-front", cache_policy=NO_CACHE)
def ensure_front(serving: BentoMLServing) -> dict[str, Any]:
    """Make sure the stable endpoint's front process runs (start it if not).

    A front that is not running (killed, crashed) is replaced; the new one forwards to the
    recorded live backend when that still runs.

    Args:
        serving: The BentoML serving block (host and port of the stable endpoint).

    Returns:
        ``{"url", "pid", "started_at"}`` of the front.

    Raises:
        ServingError: If the port is taken by another program or the front does not start.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def up() -> str:
        ...     return ensure_front(BentoMLServing.embedded())["url"]
    """
    logger = run_logger()
    with state_lock(serving):
        state = read_state(serving)
        if _front_ok(state, serving):
            front = state["front"]
            return {"url": serving.endpoint_url(), "pid": front["pid"], "started_at": front["started_at"]}
        stop_group(group_of(state.get("front"), FRONT_MARKER), timeout_s=5)
        token = secrets.token_urlsafe(24)
        logs = serving.home() / "serving" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_file = logs / f"front-{serving.port}.log"
        ready_file = logs / f"front-{serving.port}.ready"
        ready_file.unlink(missing_ok=True)
        live = state.get("live") or {}
        backend = live.get("url") if backend_alive(live) else None
        cmd = [sys.executable, "-m", _FRONT_MODULE, "--host", serving.host, "--port", str(serving.port),
               "--ready-file", str(ready_file)] + (["--backend", backend] if backend else [])
        proc, group = start_group(cmd, log_file, {**serving.subprocess_env(), "MLOPS_FRONT_TOKEN": token},
                                  endpoint_id(serving))
        try:
            wait_until(ready_file.exists, 30, f"the serving front on {serving.endpoint_url()}", process=proc,
                       interval=0.05, ignore=())
        except ProcessExited as exc:
            raise ServingError(f"The serving front could not start on {serving.endpoint_url()} (exit "
                               f"{exc.returncode}): {log_tail(log_file, 800)} Free the port or set another "
                               "port in the BentoML serving block.") from exc
        except TimeoutError as exc:
            stop_group(group, timeout_s=5)
            raise ServingError(f"The serving front did not bind {serving.endpoint_url()} within 30s. "
                               f"Log {log_file}:\n{log_tail(log_file, 800)}") from exc
        state["front"] = {"pid": proc.pid, "token": token, "host": serving.host, "port": serving.port,
                          "started_at": now_iso(), "log_file": str(log_file), "group": group}
        state["url"] = serving.endpoint_url()
        write_state(serving, state)
    logger.info("Serving front started on %s (pid %d)", serving.endpoint_url(), proc.pid)
    return {"url": serving.endpoint_url(), "pid": proc.pid, "started_at": state["front"]["started_at"]}


# -- backends ----------------------------------------------------------------------------------------
@task(name="start-bento-server", cache_policy=NO_CACHE)
def start_bento_server(serving: BentoMLServing, bento: BentoInfo) -> BackendInfo:
    """Start ``bentoml serve`` for a bento on a free 127.0.0.1 port and wait until it is ready.

    Ready means the model loaded and ``/readyz`` answers 200, within the block's
    ``readiness_timeout_s``; a model that fails to load fails fast with its error. The port is
    taken from the block's ``backend_port_range`` when set. The returned backend records its
    whole process group (the ``bentoml serve`` leader and its workers).

    Args:
        serving: The BentoML serving block (store, workers, batching, inference log, port range).
        bento: The bento to serve.

    Returns:
        The running backend (URL, PID, process group, log file).

    Raises:
        ServingError: If the process exits, the model fails to load, the deadline passes (the
            processes are stopped first) or no port of ``backend_port_range`` is free.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def up(b: BentoInfo) -> str:
        ...     return start_bento_server(BentoMLServing.embedded(), b).url
    """
    logger = run_logger()
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        launched = launch_backend(serving, bento)
        proc, group, url, log_file = launched.proc, launched.group, launched.url, launched.log_file
        try:
            wait_until(functools.partial(backend_ready, bento.tag, url, launched.status_file, log_file),
                       serving.readiness_timeout_s, f"bentoml serve {bento.tag}", process=proc, interval=0.1)
        except ProcessExited as exc:
            tail = log_tail(log_file)
            stop_group(group, timeout_s=5)  # its workers may outlive it
            if "address already in use" in tail.lower():
                last_error = log_tail(log_file, 500)
                continue
            raise ServingError(f"bentoml serve {bento.tag} exited with {exc.returncode} before it was ready. "
                               f"Log {log_file}:\n{tail}") from exc
        except ServingError:
            stop_group(group, timeout_s=10)
            raise
        except TimeoutError as exc:
            stop_group(group, timeout_s=10)
            raise ServingError(f"bento {bento.tag} was not ready within {serving.readiness_timeout_s:.0f}s "
                               f"(readiness deadline of the serving block). Log {log_file}:\n{log_tail(log_file)}"
                               ) from exc
        seconds = time.time() - launched.started
        group = record_members(group)
        logger.info("bentoml serve %s ready on %s in %.1fs (pid %d, workers %s)", bento.tag, url, seconds, proc.pid,
                    [m["pid"] for m in group["members"]])
        return BackendInfo(bento_tag=bento.tag, model_name=bento.model_name, model_version=bento.model_version,
                           run_id=bento.run_id, data_rev=bento.data_rev, labels=bento.labels, url=url,
                           port=launched.port, pid=proc.pid, log_file=str(log_file),
                           status_file=str(launched.status_file), started_at=now_iso(), ready_seconds=seconds,
                           group=group)
    raise ServingError(f"bentoml serve {bento.tag} could not bind a free port after 3 tries: {last_error}")



@task(name="switch-live-backend", cache_policy=NO_CACHE)
def switch_live_backend(serving: BentoMLServing, backend: BackendInfo) -> SwitchResult:
    """Point the stable endpoint at a backend (atomically) and record it as what serves.

    Requests already sent to the previous backend finish there; new ones go to ``backend``.
    The previous backend keeps running until :func:`stop_bento_server` drains and stops it.

    Args:
        serving: The BentoML serving block.
        backend: The checked backend.

    Returns:
        The stable URL, the new live backend, the one it replaced, and since when.

    Raises:
        ServingError: If the front is not running (call :func:`ensure_front` first) or refuses.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def swap(b: BackendInfo) -> str:
        ...     return switch_live_backend(BentoMLServing.embedded(), b).url
    """
    logger = run_logger()
    with state_lock(serving):
        state = read_state(serving)
        front = state.get("front") or {}
        if not front.get("token"):
            raise ServingError(f"No serving front runs for {serving.endpoint_url()}: start it with ensure_front.")
        label = {"bento": backend.bento_tag, "model_name": backend.model_name, "model_version": backend.model_version}
        front_request(serving.endpoint_url(), front["token"], "POST", "switch",
                       {"backend": backend.url, "label": label})
        previous = state.get("live")
        since = now_iso()
        state["live"] = {**backend.model_dump(), "since": since}
        history = state.get("history") or []
        if previous:
            history.append({"bento_tag": previous.get("bento_tag"), "model_version": previous.get("model_version"),
                            "since": previous.get("since"), "until": since})
        state["history"] = history[-HISTORY_KEPT:]
        write_state(serving, state)
    prev = BackendInfo.model_validate(previous) if previous else None
    logger.info("%s now serves %s v%s (%s), replacing %s", serving.endpoint_url(), backend.model_name,
                backend.model_version, backend.bento_tag, prev.bento_tag if prev else "nothing")
    return SwitchResult(url=serving.endpoint_url(), live=backend, previous=prev, since=since)


def _backend_inflight(serving: BentoMLServing, url: str) -> int:
    state = read_state(serving)
    token = (state.get("front") or {}).get("token")
    if not token:
        return 0
    status = front_request(serving.endpoint_url(), token, "GET", "status", timeout_s=2.0)
    entries = [status.get("backend")] + list(status.get("retired") or [])
    return sum(int(e.get("inflight", 0)) for e in entries if e and e.get("url") == url)


def _drained(serving: BentoMLServing, url: str) -> bool:
    try:
        return _backend_inflight(serving, url) == 0
    except Exception:  # noqa: BLE001 - no front: nothing can be in flight through it
        return True


@task(name="stop-bento-server", cache_policy=NO_CACHE)
def stop_bento_server(serving: BentoMLServing, backend: BackendInfo, drain: bool = True) -> bool:
    """Stop a backend and all its processes (leader and workers) after the requests it still answers finished.

    The leader is asked to stop first (its workers write what they buffer); workers that outlived
    a killed leader are found by their marker and stopped too, so nothing keeps listening.

    Args:
        serving: The BentoML serving block (``drain_timeout_s``).
        backend: The backend to stop.
        drain: Wait (up to ``drain_timeout_s``) until the front has no request in flight to it.

    Returns:
        True if a process was stopped (False: it had already exited).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def down(b: BackendInfo) -> bool:
        ...     return stop_bento_server(BentoMLServing.embedded(), b)
    """
    logger = run_logger()
    if drain:
        with contextlib.suppress(TimeoutError):  # drained or not, the backend is stopped at the deadline
            wait_until(lambda: _drained(serving, backend.url), serving.drain_timeout_s,
                       f"requests in flight to {backend.url}", interval=0.05, ignore=())
    pids = stop_group(group_of(backend.model_dump(), backend_marker(backend.port)))
    logger.info("Stopped bentoml serve %s (pid %d): %s", backend.bento_tag, backend.pid,
                f"processes {pids}" if pids else "it had already exited")
    return bool(pids)


def _block_from_args(args: argparse.Namespace) -> BentoMLServing:
    if args.block:
        return BentoMLServing.load(args.block)
    return BentoMLServing.embedded(port=args.port)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``stop`` / ``status`` / ``heal`` an endpoint, or run its ``supervise`` loop.

    ``python -m tasks.bentoml_serving stop --block local-serving`` stops the endpoint and all its
    processes (exposed as ``prefect-mlops stop-endpoint``); ``heal`` restarts a dead front or backend
    once (what a scheduled ``watch-serving`` check would run).
    """
    parser = argparse.ArgumentParser(prog="python -m tasks.bentoml_serving", description=main.__doc__.splitlines()[0])
    parser.add_argument("command", choices=["stop", "status", "heal", "supervise"])
    parser.add_argument("--block", default=None, help="saved BentoMLServing block (default: the embedded one)")
    parser.add_argument("--port", type=int, default=3000, help="port of the embedded endpoint (without --block)")
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)  # the supervisor's block, as JSON
    args = parser.parse_args(argv)
    if args.command == "supervise":
        from tasks.bentoml_supervisor import run_supervisor

        return run_supervisor(BentoMLServing.model_validate_json(Path(args.config).read_text()))
    serving = _block_from_args(args)
    if args.command == "stop":
        result: dict[str, Any] = stop_serving(serving)
    elif args.command == "heal":
        from tasks.bentoml_supervisor import heal_endpoint

        result = heal_endpoint(serving)
    else:
        result = serving_status(serving)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
