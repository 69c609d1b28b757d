"""Serving: start ``bentoml serve`` backends, check them, swap them behind one stable URL, report status, stop.

The live endpoint of a :class:`BentoMLServing` block is three kinds of local processes:

* the **front** (``python -m tasks._serving.front``) owns the stable port and forwards every
  request to the current backend over keep-alive connections;
* a **backend** per deployed bento: ``bentoml serve <bento>`` (a circus arbiter and its worker
  processes) on a free 127.0.0.1 port, inside the block's ``backend_port_range`` when set;
* the **supervisor** (``tasks/bentoml_supervisor.py``) that restarts a dead front or backend.

A deployment starts the new backend, waits for ``/readyz`` (with a deadline), sends a smoke
request built from the model's input example, and only then tells the front to switch; the
old backend finishes the requests it has (drain) and is stopped with all its processes.
Clients keep their connections to the front throughout, so a swap drops no request.

Which processes serve, since when and from which bento is kept in a small JSON file
(``BentoMLServing.state_file()``, mode 0600: it holds the front's admin token). Every process
is recorded as a group (``tasks/serving_processes.py``: leader, workers, marker) and stopped as
one, never by name. :func:`stop_serving` (also ``python -m tasks.bentoml_serving stop``) stops an
endpoint and every process it owns.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
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
from tasks.bentoml_scoring import ScoringResult, score_dataset  # noqa: F401 - re-exported (flows/batch_scoring.py)
from tasks.exceptions import ServingError
from tasks.locks import file_lock
from tasks.logs import run_logger
from tasks.serving_processes import (
    ENDPOINT_ENV,
    free_port,
    group_alive,
    marked_processes,
    process_alive,
    record_members,
    start_group,
    stop_group,
    stop_processes,
)

_FRONT_MODULE = "tasks._serving.front"
_ADMIN = "/-/mlops"
_TOKEN_HEADER = "x-mlops-token"
_HISTORY = 20
FRONT_MARKER = "tasks._serving.front"

__all__ = ["BackendInfo", "ScoringResult", "SmokeResult", "SwitchResult", "ensure_front", "get_serving_status",
           "process_alive", "read_state", "score_dataset", "serving_status", "smoke_test_server",
           "start_bento_server", "stop_bento_server", "stop_serving", "switch_live_backend", "verify_live_endpoint"]


class BackendInfo(BaseModel):
    """One ``bentoml serve`` process tree serving one bento on a private port."""

    bento_tag: str
    model_name: str
    model_version: str
    run_id: str | None
    data_rev: str | None
    labels: dict[str, str] = {}
    url: str
    port: int
    pid: int
    log_file: str
    status_file: str
    started_at: str
    ready_seconds: float
    group: dict[str, Any] = {}


class SwitchResult(BaseModel):
    """What the stable endpoint serves after a switch, and what it replaced."""

    url: str
    live: BackendInfo
    previous: BackendInfo | None
    since: str


class SmokeResult(BaseModel):
    """The answer to the smoke request."""

    url: str
    status: int
    records: int
    predictions: list[Any]
    model_version: str | None
    latency_ms: float


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def endpoint_id(serving: BentoMLServing) -> str:
    """Return the marker every process of this endpoint carries (``$MLOPS_SERVING_ENDPOINT``): its state file."""
    return str(serving.state_file())


# -- state file -------------------------------------------------------------------------------------
def _state_lock(serving: BentoMLServing) -> contextlib.AbstractContextManager[None]:
    return file_lock(serving.state_file().with_suffix(".lock"))


def read_state(serving: BentoMLServing) -> dict[str, Any]:
    """Return the endpoint's recorded state (empty when nothing was ever deployed)."""
    path = serving.state_file()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(serving: BentoMLServing, state: dict[str, Any]) -> None:
    path = serving.state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=2, default=str)
    os.replace(tmp, path)


def _log_tail(path: str | Path, chars: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _group_of(record: dict[str, Any] | None, marker: str) -> dict[str, Any] | None:
    """Return the process group of a recorded front / backend (older records have only a PID)."""
    if not record or not record.get("pid"):
        return None
    group = record.get("group") or {}
    if group.get("pid"):
        return group
    # A record written before groups existed: trust the PID only if its command line still matches.
    return {"pid": int(record["pid"])} if process_alive(int(record["pid"]), marker) else None


def backend_alive(record: dict[str, Any] | None) -> bool:
    """Return whether the recorded backend's ``bentoml serve`` leader runs."""
    return group_alive(_group_of(record, _backend_marker(int((record or {}).get("port") or 0))))


def front_alive(record: dict[str, Any] | None) -> bool:
    """Return whether the recorded front process runs."""
    return group_alive(_group_of(record, FRONT_MARKER))


def _backend_marker(port: int) -> str:
    return f"--port {port}"


# -- front -------------------------------------------------------------------------------------------
def _front_request(url: str, token: str, method: str, action: str, payload: dict[str, Any] | None = None,
                   timeout_s: float = 5.0) -> dict[str, Any]:
    import httpx

    response = httpx.request(method, f"{url}{_ADMIN}/{action}", json=payload, timeout=timeout_s,
                             headers={_TOKEN_HEADER: token})
    if response.status_code != 200:
        raise ServingError(f"The serving front at {url} refused {action}: HTTP {response.status_code} {response.text}")
    return response.json()


def _front_ok(state: dict[str, Any], serving: BentoMLServing) -> bool:
    front = state.get("front") or {}
    if not front_alive(front):
        return False
    try:
        _front_request(serving.endpoint_url(), front["token"], "GET", "status", timeout_s=2.0)
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
    with _state_lock(serving):
        state = read_state(serving)
        if _front_ok(state, serving):
            front = state["front"]
            return {"url": serving.endpoint_url(), "pid": front["pid"], "started_at": front["started_at"]}
        stop_group(_group_of(state.get("front"), FRONT_MARKER), timeout_s=5)
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
        deadline = time.monotonic() + 30
        while not ready_file.exists():
            if proc.poll() is not None:
                raise ServingError(f"The serving front could not start on {serving.endpoint_url()} (exit "
                                   f"{proc.returncode}): {_log_tail(log_file, 800)} Free the port or set another "
                                   "port in the BentoML serving block.")
            if time.monotonic() > deadline:
                stop_group(group, timeout_s=5)
                raise ServingError(f"The serving front did not bind {serving.endpoint_url()} within 30s. "
                                   f"Log {log_file}:\n{_log_tail(log_file, 800)}")
            time.sleep(0.05)
        state["front"] = {"pid": proc.pid, "token": token, "host": serving.host, "port": serving.port,
                          "started_at": _now(), "log_file": str(log_file), "group": group}
        state["url"] = serving.endpoint_url()
        _write_state(serving, state)
    logger.info("Serving front started on %s (pid %d)", serving.endpoint_url(), proc.pid)
    return {"url": serving.endpoint_url(), "pid": proc.pid, "started_at": state["front"]["started_at"]}


# -- backends ----------------------------------------------------------------------------------------
def _backend_port(serving: BentoMLServing) -> int:
    port = free_port("127.0.0.1", serving.backend_port_range, exclude=[serving.port])
    if port is None:
        low, high = serving.backend_port_range or (0, 0)
        raise ServingError(f"No free port for a backend in the serving block's backend_port_range ({low}, {high}): "
                           f"all {high - low + 1} ports are taken. Stop endpoints you no longer need "
                           "(python -m tasks.bentoml_serving stop --port <port>) or widen backend_port_range.")
    return port


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
    import httpx

    logger = run_logger()
    folder = serving.home() / "serving"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "backends").mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        port = _backend_port(serving)
        stem = f"{bento.tag.replace(':', '-')}-{port}"
        log_file = folder / "logs" / f"{stem}.log"
        status_file = folder / "backends" / f"{stem}.status.json"
        status_file.unlink(missing_ok=True)
        started = time.monotonic()
        proc, group = start_group(
            [sys.executable, "-m", "bentoml", "serve", bento.tag, "--host", "127.0.0.1", "--port", str(port)],
            log_file, serving.runtime_env(str(status_file)), endpoint_id(serving), cwd=str(serving.home()))
        url = f"http://127.0.0.1:{port}"
        deadline = started + serving.readiness_timeout_s
        reason = None
        while True:
            if proc.poll() is not None:
                tail = _log_tail(log_file)
                stop_group(group, timeout_s=5)  # its workers may outlive it
                if "address already in use" in tail.lower():
                    reason = "port taken"
                    break
                raise ServingError(f"bentoml serve {bento.tag} exited with {proc.returncode} before it was ready. "
                                   f"Log {log_file}:\n{tail}")
            try:
                report = json.loads(status_file.read_text()) if status_file.exists() else {}
            except ValueError:
                report = {}
            if report.get("state") == "failed":
                stop_group(group, timeout_s=10)
                raise ServingError(f"bento {bento.tag} could not load its model: {report.get('error')}. "
                                   f"Log: {log_file}")
            with contextlib.suppress(httpx.HTTPError):
                if report.get("state") == "ready" and httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                stop_group(group, timeout_s=10)
                raise ServingError(f"bento {bento.tag} was not ready within {serving.readiness_timeout_s:.0f}s "
                                   f"(readiness deadline of the serving block). Log {log_file}:\n{_log_tail(log_file)}")
            time.sleep(0.1)
        if reason == "port taken":
            last_error = _log_tail(log_file, 500)
            continue
        seconds = time.monotonic() - started
        group = record_members(group)
        logger.info("bentoml serve %s ready on %s in %.1fs (pid %d, workers %s)", bento.tag, url, seconds, proc.pid,
                    [m["pid"] for m in group["members"]])
        return BackendInfo(bento_tag=bento.tag, model_name=bento.model_name, model_version=bento.model_version,
                           run_id=bento.run_id, data_rev=bento.data_rev, labels=bento.labels, url=url, port=port,
                           pid=proc.pid, log_file=str(log_file), status_file=str(status_file), started_at=_now(),
                           ready_seconds=seconds, group=group)
    raise ServingError(f"bentoml serve {bento.tag} could not bind a free port after 3 tries: {last_error}")


def prediction_problem(prediction: Any, task_type: str | None, classes: list[Any] | None) -> str | None:
    """Return what is wrong with a prediction for the model's task type (None: it has the right type).

    A classifier answers one of its training labels (compared as text when the JSON types differ,
    e.g. ``"1"`` vs ``1``); a regressor a finite number. Without a known task type (a bento of an
    older version) any non-null scalar is accepted.

    Examples:
        >>> prediction_problem("setosa", "multiclass", ["setosa", "virginica"]) is None
        True
        >>> prediction_problem(float("nan"), "regression", None)
        'nan is not a finite number'
    """
    if prediction is None or isinstance(prediction, list | dict):
        return f"{prediction!r} is not a single label or number"
    if task_type == "regression":
        if isinstance(prediction, bool) or not isinstance(prediction, int | float) or not math.isfinite(prediction):
            return f"{prediction!r} is not a finite number"
    elif task_type in ("binary", "multiclass") and classes:
        if prediction not in classes and str(prediction) not in {str(c) for c in classes}:
            return f"{prediction!r} is not one of the model's classes {classes}"
    return None


def _smoke_records(bento: BentoInfo) -> list[dict[str, Any]]:
    if not bento.input_example:
        raise ServingError(f"bento {bento.tag} has no input example to build a smoke request from: log the model "
                           "with an input_example.")
    return bento.input_example


@task(name="smoke-test-server", cache_policy=NO_CACHE)
def smoke_test_server(url: str, bento: BentoInfo, timeout_s: float = 30.0) -> SmokeResult:
    """Send the model's input example to a server and check that the right model answers it.

    Both shapes are checked: the first example record alone and the examples as a batch.

    Args:
        url: Base URL of the server (a backend or the stable endpoint).
        bento: The bento that should answer.
        timeout_s: Timeout of each request.

    Returns:
        The status, the predictions and the model version that answered.

    Raises:
        ServingError: If a request fails, is not answered 200, or another model version answers.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def smoke(url: str, b: BentoInfo) -> list:
        ...     return smoke_test_server(url, b).predictions
    """
    import httpx

    logger = run_logger()
    records = _smoke_records(bento)
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            request_id = f"smoke-{int(time.time() * 1000)}"  # logged like any prediction; monitoring can skip "smoke-"
            single = client.post("/predict", json=records[0], headers={"x-request-id": request_id})
            batch = client.post("/predict", json=records, headers={"x-request-id": f"{request_id}-batch"}) \
                if single.status_code == 200 else single
    except httpx.HTTPError as exc:
        raise ServingError(f"The smoke request to {url} for {bento.tag} failed: {type(exc).__name__}: {exc}") from exc
    latency = (time.perf_counter() - started) * 1000
    for response in (single, batch):
        if response.status_code != 200:
            raise ServingError(f"The smoke request to {url} for {bento.tag} was answered HTTP "
                               f"{response.status_code}: {response.text[:1000]}")
    body = batch.json()
    version = str(body.get("model_version"))
    if version != bento.model_version or len(body.get("predictions", [])) != len(records):
        raise ServingError(f"The smoke request to {url} was answered by model version {version} with "
                           f"{len(body.get('predictions', []))} predictions; expected version {bento.model_version} "
                           f"and {len(records)}.")
    answers = [("the single record", single.json().get("prediction"))]
    answers += [(f"batch record {i}", p) for i, p in enumerate(body["predictions"])]
    for where, prediction in answers:
        problem = prediction_problem(prediction, bento.task_type, bento.classes)
        if problem:
            raise ServingError(f"The smoke request to {url} for {bento.tag} got a wrong prediction for {where}: "
                               f"{problem}. The model or the service returns the wrong output type for a "
                               f"{bento.task_type} model; fix the model (or the service) and deploy again.")
    logger.info("Smoke request to %s answered by %s v%s: %s", url, bento.model_name, version, body["predictions"])
    return SmokeResult(url=url, status=batch.status_code, records=len(records), predictions=body["predictions"],
                       model_version=version, latency_ms=latency)


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
    with _state_lock(serving):
        state = read_state(serving)
        front = state.get("front") or {}
        if not front.get("token"):
            raise ServingError(f"No serving front runs for {serving.endpoint_url()}: start it with ensure_front.")
        label = {"bento": backend.bento_tag, "model_name": backend.model_name, "model_version": backend.model_version}
        _front_request(serving.endpoint_url(), front["token"], "POST", "switch",
                       {"backend": backend.url, "label": label})
        previous = state.get("live")
        since = _now()
        state["live"] = {**backend.model_dump(), "since": since}
        history = state.get("history") or []
        if previous:
            history.append({"bento_tag": previous.get("bento_tag"), "model_version": previous.get("model_version"),
                            "since": previous.get("since"), "until": since})
        state["history"] = history[-_HISTORY:]
        _write_state(serving, state)
    prev = BackendInfo.model_validate(previous) if previous else None
    logger.info("%s now serves %s v%s (%s), replacing %s", serving.endpoint_url(), backend.model_name,
                backend.model_version, backend.bento_tag, prev.bento_tag if prev else "nothing")
    return SwitchResult(url=serving.endpoint_url(), live=backend, previous=prev, since=since)


def _backend_inflight(serving: BentoMLServing, url: str) -> int:
    state = read_state(serving)
    token = (state.get("front") or {}).get("token")
    if not token:
        return 0
    status = _front_request(serving.endpoint_url(), token, "GET", "status", timeout_s=2.0)
    entries = [status.get("backend")] + list(status.get("retired") or [])
    return sum(int(e.get("inflight", 0)) for e in entries if e and e.get("url") == url)


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
        deadline = time.monotonic() + serving.drain_timeout_s
        while time.monotonic() < deadline:
            try:
                if _backend_inflight(serving, backend.url) == 0:
                    break
            except Exception:  # noqa: BLE001 - no front: nothing can be in flight through it
                break
            time.sleep(0.05)
    pids = stop_group(_group_of(backend.model_dump(), _backend_marker(backend.port)))
    logger.info("Stopped bentoml serve %s (pid %d): %s", backend.bento_tag, backend.pid,
                f"processes {pids}" if pids else "it had already exited")
    return bool(pids)


@task(name="verify-live-endpoint", cache_policy=NO_CACHE)
def verify_live_endpoint(serving: BentoMLServing, bento: BentoInfo) -> dict[str, Any]:
    """Check through the stable URL that the bento serves: ``/model`` names it and a smoke request succeeds.

    Args:
        serving: The BentoML serving block.
        bento: The bento that should serve.

    Returns:
        The endpoint's ``/model`` answer.

    Raises:
        ServingError: If another bento answers or the smoke request fails.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def check(b: BentoInfo) -> str:
        ...     return verify_live_endpoint(BentoMLServing.embedded(), b)["model_version"]
    """
    import httpx

    url = serving.endpoint_url()
    try:
        info = httpx.get(f"{url}/model", timeout=10.0).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ServingError(f"The live endpoint {url} does not answer /model: {exc}") from exc
    if info.get("bento_tag") != bento.tag:
        raise ServingError(f"The live endpoint {url} serves {info.get('bento_tag')}, not {bento.tag}.")
    smoke_test_server.fn(url, bento)
    return info


@task(name="get-serving-status", cache_policy=NO_CACHE)
def get_serving_status(serving: BentoMLServing) -> dict[str, Any]:
    """Return what the live endpoint serves now (see :func:`serving_status`).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def show() -> str | None:
        ...     return get_serving_status(BentoMLServing.embedded()).get("model_version")
    """
    return serving_status(serving)


def serving_status(serving: BentoMLServing | None = None, probe: bool = True) -> dict[str, Any]:
    """Return which bento and model version serve on the endpoint now, since when, and their lineage.

    What answers is the truth: ``model_version`` and ``bento`` name what the endpoint's ``/model``
    answers (or, with ``probe=False``, the recorded live backend while its processes run), and are
    None when nothing answers. What was last deployed is under ``deployed`` either way.

    Args:
        serving: The BentoML serving block (None: the embedded default on 127.0.0.1:3000).
        probe: Ask the processes (``/model`` of the live endpoint) besides reading the state file.

    Returns:
        ``{"url", "state", "model_name", "model_version", "bento", "since", "lineage": {run_id,
        data_rev, ...}, "deployed": {model_version, bento}, "front": {...}, "backend": {...},
        "supervisor": {...}, "inference_log": {written, dropped}, "history": [...]}``; ``state`` is
        ``serving``, ``degraded`` (a process is down or another version answers), ``stopped`` or
        ``not deployed``.

    Examples:
        >>> from tasks.bentoml_serving import serving_status
        >>> serving_status()["state"]  # doctest: +SKIP
        'serving'
    """
    import httpx

    from tasks.inference_log import inference_log_stats

    serving = serving or BentoMLServing.embedded()
    state = read_state(serving)
    live = state.get("live")
    front = state.get("front") or {}
    supervisor = state.get("supervisor") or {}
    out: dict[str, Any] = {"url": serving.endpoint_url(), "state": "not deployed", "model_name": None,
                           "model_version": None, "bento": None, "since": None, "lineage": {}, "deployed": None,
                           "front": {"pid": front.get("pid"), "alive": front_alive(front),
                                     "started_at": front.get("started_at")},
                           "supervisor": {"pid": supervisor.get("pid"), "alive": group_alive(supervisor.get("group")),
                                          "restarts": state.get("restarts") or []},
                           "backend": None, "history": state.get("history") or []}
    if not live:
        return out
    alive_backend = backend_alive(live)
    out.update({"model_name": live.get("model_name"), "since": live.get("since"),
                "deployed": {"model_version": live.get("model_version"), "bento": live.get("bento_tag")},
                "lineage": {"run_id": live.get("run_id"), "data_rev": live.get("data_rev"),
                            **{k: v for k, v in (live.get("labels") or {}).items() if v}},
                "backend": {"url": live.get("url"), "pid": live.get("pid"), "alive": alive_backend,
                            "workers": [m.get("pid") for m in (live.get("group") or {}).get("members") or []],
                            "log_file": live.get("log_file")}})
    alive = out["front"]["alive"] and alive_backend
    out["state"] = "serving" if alive else ("stopped" if not (out["front"]["alive"] or alive_backend) else "degraded")
    if alive:
        out.update({"model_version": live.get("model_version"), "bento": live.get("bento_tag")})
    if probe and alive:
        try:
            info = httpx.get(f"{serving.endpoint_url()}/model", timeout=3.0).json()
            out["answering"] = {"model_version": info.get("model_version"), "bento": info.get("bento_tag"),
                                "pid": info.get("pid")}
            out.update({"model_version": info.get("model_version"), "bento": info.get("bento_tag")})
            if info.get("bento_tag") != live.get("bento_tag"):
                out["state"] = "degraded"
        except (httpx.HTTPError, ValueError) as exc:
            out.update({"state": "degraded", "model_version": None, "bento": None, "answering": {"error": str(exc)}})
    if live.get("model_name"):
        stats = inference_log_stats(serving.log_path(), live["model_name"])
        out["inference_log"] = {"path": str(serving.log_path()), "written": stats["written"],
                                "dropped": stats["dropped"]}
    return out


def stop_serving(serving: BentoMLServing | None = None) -> dict[str, Any]:
    """Stop an endpoint and every process it owns: supervisor, backends with their workers, front.

    The supervisor is stopped first (so nothing is restarted), then the live backend (gracefully:
    its workers write what they buffer) and the front; last, any process still marked with this
    endpoint (``$MLOPS_SERVING_ENDPOINT``: a backend a deployment or the supervisor was starting,
    a worker orphaned by a killed leader) is stopped too. The history is kept.
    Command line: ``python -m tasks.bentoml_serving stop [--port P | --block NAME]``.

    Args:
        serving: The BentoML serving block (None: the embedded default).

    Returns:
        ``{"stopped": [what was stopped]}``.

    Examples:
        >>> from tasks.bentoml_serving import stop_serving
        >>> stop_serving()  # doctest: +SKIP
        {'stopped': ['supervisor (pid 4239)', 'backend churn:v3-... (pids [4242, 4250])', 'front (pid 4240)']}
    """
    serving = serving or BentoMLServing.embedded()
    stopped: list[str] = []
    with _state_lock(serving):
        state = read_state(serving)
        supervisor = state.get("supervisor") or {}
        if stop_group(supervisor.get("group"), timeout_s=10):
            stopped.append(f"supervisor (pid {supervisor.get('pid')})")
        live = state.get("live")
        pids = stop_group(_group_of(live, _backend_marker(int((live or {}).get("port") or 0))))
        if pids:
            stopped.append(f"backend {live.get('bento_tag')} (pids {sorted(pids)})")
        front = state.get("front") or {}
        if stop_group(_group_of(front, FRONT_MARKER)):
            stopped.append(f"front (pid {front['pid']})")
        strays = stop_processes(marked_processes(ENDPOINT_ENV, endpoint_id(serving)), timeout_s=10)
        if strays:
            stopped.append(f"other processes of the endpoint (pids {sorted(strays)})")
        if live:
            history = state.get("history") or []
            history.append({"bento_tag": live.get("bento_tag"), "model_version": live.get("model_version"),
                            "since": live.get("since"), "until": _now()})
            state["history"] = history[-_HISTORY:]
        state.update({"live": None, "front": None, "supervisor": None})
        _write_state(serving, state)
    return {"stopped": stopped}


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
