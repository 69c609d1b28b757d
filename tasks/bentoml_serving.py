"""Serving: start ``bentoml serve`` backends, check them, swap them behind one stable URL, report status.

The live endpoint of a :class:`BentoMLServing` block is two kinds of local processes:

* the **front** (``tasks/bentoml_service.py front``) owns the stable port and forwards every
  request to the current backend over keep-alive connections;
* a **backend** per deployed bento: ``bentoml serve <bento>`` on a free 127.0.0.1 port.

A deployment starts the new backend, waits for ``/readyz`` (with a deadline), sends a smoke
request built from the model's input example, and only then tells the front to switch; the
old backend finishes the requests it has (drain) and is stopped by PID. Clients keep their
connections to the front throughout, so a swap drops no request.

Which processes serve, since when and from which bento is kept in a small JSON file
(``BentoMLServing.state_file()``, mode 0600: it holds the front's admin token);
:func:`serving_status` reads it and asks the processes. Everything started here is stopped
by PID (its process group), never by name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
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
from tasks.locks import file_lock
from tasks.logs import run_logger
from tasks.mlflow_registry import ModelVersionInfo

_SERVICE_SCRIPT = Path(__file__).resolve().with_name("bentoml_service.py")
_ADMIN = "/-/mlops"
_TOKEN_HEADER = "x-mlops-token"
_HISTORY = 20


class BackendInfo(BaseModel):
    """One ``bentoml serve`` process serving one bento on a private port."""

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


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


# -- processes -------------------------------------------------------------------------------------
def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int | None, marker: str | None = None) -> bool:
    """Return whether ``pid`` runs (not a zombie) and, when given, its command line contains ``marker``."""
    if not pid:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    except OSError:
        pass
    if marker is not None:
        cmd = _cmdline(pid)
        return cmd is None or marker in cmd
    return True


def _group_alive(pgid: int) -> bool:
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Only zombies left? (a group whose leader was reaped but whose members are exiting)
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_process_group(pid: int, marker: str | None, timeout_s: float = 20.0) -> bool:
    """Stop a process we started (in its own session) and its children: SIGTERM, then SIGKILL.

    Args:
        pid: The leader's PID (its process group id, as started with ``start_new_session``).
        marker: Text its command line must contain (guards against a recycled PID).
        timeout_s: Grace period before SIGKILL.

    Returns:
        True if something was stopped.
    """
    leader = process_alive(pid)
    if leader and marker is not None and not process_alive(pid, marker):
        return False  # the PID was recycled by another program: not ours to stop
    if not leader and not _group_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if leader:
            os.kill(pid, signal.SIGTERM)
        else:
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid) and not _group_alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while time.monotonic() < end and _group_alive(pid):
        time.sleep(0.05)
    return True


def _log_tail(path: str | Path, chars: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


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
    if not process_alive(front.get("pid"), "bentoml_service.py front"):
        return False
    try:
        _front_request(serving.endpoint_url(), front["token"], "GET", "status", timeout_s=2.0)
    except Exception:  # noqa: BLE001 - any failure means "not our healthy front"
        return False
    return True


@task(name="ensure-serving-front", cache_policy=NO_CACHE)
def ensure_front(serving: BentoMLServing) -> dict[str, Any]:
    """Make sure the stable endpoint's front process runs (start it if not).

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
        old = state.get("front") or {}
        if old.get("pid"):
            stop_process_group(int(old["pid"]), "bentoml_service.py front", timeout_s=5)
        token = secrets.token_urlsafe(24)
        logs = serving.home() / "serving" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_file = logs / f"front-{serving.port}.log"
        ready_file = logs / f"front-{serving.port}.ready"
        ready_file.unlink(missing_ok=True)
        backend = (state.get("live") or {}).get("url")
        if backend and not process_alive((state.get("live") or {}).get("pid"), "bentoml"):
            backend = None
        cmd = [sys.executable, str(_SERVICE_SCRIPT), "front", "--host", serving.host, "--port", str(serving.port),
               "--ready-file", str(ready_file)] + (["--backend", backend] if backend else [])
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**serving.subprocess_env(), "MLOPS_FRONT_TOKEN": token})
        deadline = time.monotonic() + 30
        while not ready_file.exists():
            if proc.poll() is not None:
                raise ServingError(f"The serving front could not start on {serving.endpoint_url()} (exit "
                                   f"{proc.returncode}): {_log_tail(log_file, 800)} Free the port or set another "
                                   "port in the BentoML serving block.")
            if time.monotonic() > deadline:
                stop_process_group(proc.pid, None, timeout_s=5)
                raise ServingError(f"The serving front did not bind {serving.endpoint_url()} within 30s.")
            time.sleep(0.05)
        state["front"] = {"pid": proc.pid, "token": token, "host": serving.host, "port": serving.port,
                          "started_at": _now(), "log_file": str(log_file)}
        state["url"] = serving.endpoint_url()
        _write_state(serving, state)
    logger.info("Serving front started on %s (pid %d)", serving.endpoint_url(), proc.pid)
    return {"url": serving.endpoint_url(), "pid": proc.pid, "started_at": state["front"]["started_at"]}


# -- backends ----------------------------------------------------------------------------------------
@task(name="start-bento-server", cache_policy=NO_CACHE)
def start_bento_server(serving: BentoMLServing, bento: BentoInfo) -> BackendInfo:
    """Start ``bentoml serve`` for a bento on a free 127.0.0.1 port and wait until it is ready.

    Ready means the model loaded and ``/readyz`` answers 200, within the block's
    ``readiness_timeout_s``; a model that fails to load fails fast with its error.

    Args:
        serving: The BentoML serving block (store, workers, batching, inference log).
        bento: The bento to serve.

    Returns:
        The running backend (URL, PID, log file).

    Raises:
        ServingError: If the process exits, the model fails to load or the deadline passes; the
            process is stopped first.

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
        port = _free_port()
        stem = f"{bento.tag.replace(':', '-')}-{port}"
        log_file = folder / "logs" / f"{stem}.log"
        status_file = folder / "backends" / f"{stem}.status.json"
        status_file.unlink(missing_ok=True)
        started = time.monotonic()
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", bento.tag, "--host", "127.0.0.1", "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(serving.home()),
                env=serving.runtime_env(str(status_file)))
        url = f"http://127.0.0.1:{port}"
        deadline = started + serving.readiness_timeout_s
        reason = None
        while True:
            if proc.poll() is not None:
                tail = _log_tail(log_file)
                if "address already in use" in tail.lower():
                    reason = "port taken"
                    break
                stop_process_group(proc.pid, None, timeout_s=5)
                raise ServingError(f"bentoml serve {bento.tag} exited with {proc.returncode} before it was ready. "
                                   f"Log {log_file}:\n{tail}")
            try:
                report = json.loads(status_file.read_text()) if status_file.exists() else {}
            except ValueError:
                report = {}
            if report.get("state") == "failed":
                stop_process_group(proc.pid, None, timeout_s=10)
                raise ServingError(f"bento {bento.tag} could not load its model: {report.get('error')}. "
                                   f"Log: {log_file}")
            with contextlib.suppress(httpx.HTTPError):
                if report.get("state") == "ready" and httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                stop_process_group(proc.pid, None, timeout_s=10)
                raise ServingError(f"bento {bento.tag} was not ready within {serving.readiness_timeout_s:.0f}s "
                                   f"(readiness deadline of the serving block). Log {log_file}:\n{_log_tail(log_file)}")
            time.sleep(0.1)
        if reason == "port taken":
            last_error = _log_tail(log_file, 500)
            continue
        seconds = time.monotonic() - started
        logger.info("bentoml serve %s ready on %s in %.1fs (pid %d)", bento.tag, url, seconds, proc.pid)
        return BackendInfo(bento_tag=bento.tag, model_name=bento.model_name, model_version=bento.model_version,
                           run_id=bento.run_id, data_rev=bento.data_rev, labels=bento.labels, url=url, port=port,
                           pid=proc.pid, log_file=str(log_file), status_file=str(status_file), started_at=_now(),
                           ready_seconds=seconds)
    raise ServingError(f"bentoml serve {bento.tag} could not bind a free port after 3 tries: {last_error}")


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
    """Stop a backend by PID after the requests it is still answering have finished.

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
    stopped = stop_process_group(backend.pid, _backend_marker(backend.port))
    logger.info("Stopped bentoml serve %s (pid %d): %s", backend.bento_tag, backend.pid,
                "done" if stopped else "it had already exited")
    return stopped


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

    Args:
        serving: The BentoML serving block (None: the embedded default on 127.0.0.1:3000).
        probe: Ask the processes (``/model`` of the live endpoint) besides reading the state file.

    Returns:
        ``{"url", "state", "model_name", "model_version", "bento", "since", "lineage": {run_id,
        data_rev, ...}, "front": {...}, "backend": {...}, "inference_log": {written, dropped},
        "history": [...]}``; ``state`` is ``serving``, ``degraded`` (a process is down),
        ``stopped`` or ``not deployed``.

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
    out: dict[str, Any] = {"url": serving.endpoint_url(), "state": "not deployed", "model_name": None,
                           "model_version": None, "bento": None, "since": None, "lineage": {},
                           "front": {"pid": front.get("pid"), "alive": process_alive(front.get("pid"),
                                                                                     "bentoml_service.py front"),
                                     "started_at": front.get("started_at")},
                           "backend": None, "history": state.get("history") or []}
    if not live:
        return out
    backend_alive = process_alive(live.get("pid"), _backend_marker(int(live.get("port", 0))))
    out.update({"model_name": live.get("model_name"), "model_version": live.get("model_version"),
                "bento": live.get("bento_tag"), "since": live.get("since"),
                "lineage": {"run_id": live.get("run_id"), "data_rev": live.get("data_rev"),
                            **{k: v for k, v in (live.get("labels") or {}).items() if v}},
                "backend": {"url": live.get("url"), "pid": live.get("pid"), "alive": backend_alive,
                            "log_file": live.get("log_file")}})
    alive = out["front"]["alive"] and backend_alive
    out["state"] = "serving" if alive else ("stopped" if not (out["front"]["alive"] or backend_alive) else "degraded")
    if probe and alive:
        try:
            info = httpx.get(f"{serving.endpoint_url()}/model", timeout=3.0).json()
            out["answering"] = {"model_version": info.get("model_version"), "bento": info.get("bento_tag"),
                                "pid": info.get("pid")}
        except (httpx.HTTPError, ValueError) as exc:
            out["state"] = "degraded"
            out["answering"] = {"error": str(exc)}
    if live.get("model_name"):
        stats = inference_log_stats(serving.log_path(), live["model_name"])
        out["inference_log"] = {"path": str(serving.log_path()), "written": stats["written"],
                                "dropped": stats["dropped"]}
    return out


def stop_serving(serving: BentoMLServing | None = None) -> dict[str, Any]:
    """Stop the live endpoint: its backend(s) and its front, by PID; keep the history.

    Args:
        serving: The BentoML serving block (None: the embedded default).

    Returns:
        ``{"stopped": [what was stopped]}``.

    Examples:
        >>> from tasks.bentoml_serving import stop_serving
        >>> stop_serving()  # doctest: +SKIP
        {'stopped': ['backend churn-classifier:v3-... (pid 4242)', 'front (pid 4240)']}
    """
    serving = serving or BentoMLServing.embedded()
    stopped: list[str] = []
    with _state_lock(serving):
        state = read_state(serving)
        live = state.get("live")
        if live and stop_process_group(int(live["pid"]), _backend_marker(int(live["port"]))):
            stopped.append(f"backend {live.get('bento_tag')} (pid {live['pid']})")
        front = state.get("front") or {}
        if front.get("pid") and stop_process_group(int(front["pid"]), "bentoml_service.py front"):
            stopped.append(f"front (pid {front['pid']})")
        if live:
            history = state.get("history") or []
            history.append({"bento_tag": live.get("bento_tag"), "model_version": live.get("model_version"),
                            "since": live.get("since"), "until": _now()})
            state["history"] = history[-_HISTORY:]
        state["live"] = None
        state["front"] = None
        _write_state(serving, state)
    return {"stopped": stopped}


# -- batch scoring (offline serving) ----------------------------------------------------------------
class ScoringResult(BaseModel):
    """What a batch scoring run wrote."""

    model_name: str
    model_version: str
    rows: int
    output_file: str
    logged: int
    dropped: int
    prediction_counts: dict[str, int]
    seconds: float


@task(name="score-dataset", cache_policy=NO_CACHE)
def score_dataset(version: ModelVersionInfo, model_dir: str, data_file: str, output_file: str,
                  log_dir: str | None = None, batch_id: str | None = None, chunk_rows: int = 50_000) -> ScoringResult:
    """Score a dataset with a registered model version, write the predictions and log them like online ones.

    The same prediction code as the online service (:class:`tasks.bentoml_service.Predictor`), so
    batch and online outputs agree. Each row gets a request id ``batch-<batch id>-<row>``, so its
    ground truth can be attached later; columns the model does not use (ids, target, timestamps)
    are carried through to the output.

    Args:
        version: The registered version.
        model_dir: Its local MLflow model folder.
        data_file: CSV or Parquet file to score.
        output_file: Parquet file to write (request id, model name / version, scored_at, the input
            columns, prediction, score).
        log_dir: Inference log folder (None: do not log).
        batch_id: Id of this batch (default: random); part of the request ids.
        chunk_rows: Rows scored per ``predict`` call.

    Returns:
        Rows scored, the output file, records logged / dropped, counts per predicted value.

    Raises:
        DataValidationError: If the dataset lacks a column of the model's signature or is unreadable.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def score(v, folder: str) -> int:
        ...     return score_dataset(v, folder, "data/new.parquet", "/tmp/scores.parquet").rows
    """
    import numpy as np
    import pandas as pd

    from tasks.bentoml_packaging import read_mlflow_signature
    from tasks.bentoml_service import Predictor, load_mlflow_model
    from tasks.exceptions import DataValidationError
    from tasks.inference_log import InferenceLogWriter
    from tasks.sample_data import read_frame

    logger = run_logger()
    started = time.perf_counter()
    columns, _ = read_mlflow_signature(model_dir)
    features = [c["name"] for c in columns]
    frame = read_frame(data_file)
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise DataValidationError(f"Cannot score {data_file} with {version.name} v{version.version}: it lacks the "
                                  f"model's column(s) {missing}.", [f"missing column {m}" for m in missing])
    predictor = Predictor(load_mlflow_model(model_dir))
    batch_id = batch_id or secrets.token_hex(6)
    scored_at = time.time()
    writer = InferenceLogWriter(log_dir, version.name, version.version, source="batch", start_thread=False,
                                max_buffered=max(len(frame), 1) + 1,
                                feature_types={c["name"]: str(c["type"]) for c in columns}) if log_dir else None
    predictions, scores = [], []
    for start in range(0, len(frame), chunk_rows):
        chunk = frame.iloc[start:start + chunk_rows][features].reset_index(drop=True)
        pred, score = predictor(chunk)
        predictions.append(pred)
        scores.append(np.full(len(chunk), np.nan) if score is None else score)
        if writer is not None:
            ids = [f"batch-{batch_id}-{i}" for i in range(start, start + len(chunk))]
            writer.log(ids, [scored_at] * len(chunk), chunk, pred, score)
    out = frame.reset_index(drop=True).copy()
    out.insert(0, "request_id", [f"batch-{batch_id}-{i}" for i in range(len(frame))])
    out.insert(1, "model_name", version.name)
    out.insert(2, "model_version", str(version.version))
    out.insert(3, "scored_at", pd.Timestamp(scored_at, unit="s", tz="UTC"))
    out["prediction"] = np.concatenate(predictions) if predictions else np.array([])
    out["score"] = np.concatenate(scores) if scores else np.array([])
    Path(output_file).parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(output_file, index=False)
    logged = dropped = 0
    if writer is not None:
        writer.close()
        logged, dropped = writer.written, writer.dropped
    counts = {str(k): int(v) for k, v in out["prediction"].value_counts().items()}
    seconds = time.perf_counter() - started
    logger.info("Scored %d rows of %s with %s v%s in %.1fs -> %s (logged %d, dropped %d)", len(out), data_file,
                version.name, version.version, seconds, output_file, logged, dropped)
    return ScoringResult(model_name=version.name, model_version=str(version.version), rows=len(out),
                         output_file=str(output_file), logged=logged, dropped=dropped, prediction_counts=counts,
                         seconds=seconds)
