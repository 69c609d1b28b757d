"""The state of a serving endpoint: which processes serve, since when, from which bento; its status; stopping it.

The live endpoint of a :class:`BentoMLServing` block is three kinds of local processes:

* the **front** (``python -m tasks._serving.front``) owns the stable port and forwards every
  request to the current backend over keep-alive connections;
* a **backend** per deployed bento: ``bentoml serve <bento>`` (a circus arbiter and its worker
  processes) on a free 127.0.0.1 port, inside the block's ``backend_port_range`` when set;
* the **supervisor** (``tasks/bentoml_supervisor.py``) that restarts a dead front or backend.

Which processes serve, since when and from which bento is kept in a small JSON file
(``BentoMLServing.state_file()``, mode 0600: it holds the front's admin token), written under a
file lock. Every process is recorded as a group (``tasks/serving_processes.py``: leader, workers,
marker) and stopped as one, never by name. :func:`serving_status` says what answers now;
:func:`stop_serving` (also ``python -m tasks.bentoml_serving stop``) stops an endpoint and every
process it owns. The deployment steps that change the state are in ``tasks/bentoml_serving.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.bentoml_serving import BentoMLServing
from tasks.exceptions import ServingError
from tasks.locks import file_lock
from tasks.serving_processes import ENDPOINT_ENV, group_alive, marked_processes, stop_group, stop_processes
from tasks.system import atomic_write_text, process_alive

_ADMIN = "/-/mlops"
_TOKEN_HEADER = "x-mlops-token"
HISTORY_KEPT = 20
FRONT_MARKER = "tasks._serving.front"

__all__ = ["FRONT_MARKER", "BackendInfo", "backend_alive", "backend_marker", "endpoint_id", "front_alive",
           "front_request", "get_serving_status", "group_of", "now_iso", "read_state", "serving_status",
           "state_lock", "stop_serving", "write_state"]


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
    standby: bool = False  # started ahead as the endpoint's standby (tasks/serving_standby.py), then adopted


def now_iso() -> str:
    """Return the current UTC time as ISO 8601 text (the state's timestamps)."""
    return dt.datetime.now(dt.UTC).isoformat()


def endpoint_id(serving: BentoMLServing) -> str:
    """Return the marker every process of this endpoint carries (``$MLOPS_SERVING_ENDPOINT``): its state file."""
    return str(serving.state_file())


# -- state file -------------------------------------------------------------------------------------
def state_lock(serving: BentoMLServing) -> contextlib.AbstractContextManager[None]:
    """Return the file lock that every read-modify-write of the endpoint's state holds."""
    return file_lock(serving.state_file().with_suffix(".lock"))


def read_state(serving: BentoMLServing) -> dict[str, Any]:
    """Return the endpoint's recorded state (empty when nothing was ever deployed)."""
    path = serving.state_file()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_state(serving: BentoMLServing, state: dict[str, Any]) -> None:
    """Replace the endpoint's state file in one step, mode 0600 (it holds the front's admin token)."""
    atomic_write_text(serving.state_file(), json.dumps(state, indent=2, default=str), mode=0o600)


def group_of(record: dict[str, Any] | None, marker: str) -> dict[str, Any] | None:
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
    return group_alive(group_of(record, backend_marker(int((record or {}).get("port") or 0))))


def front_alive(record: dict[str, Any] | None) -> bool:
    """Return whether the recorded front process runs."""
    return group_alive(group_of(record, FRONT_MARKER))


def backend_marker(port: int) -> str:
    """Return the command-line part that identifies the backend on ``port`` (records older than groups)."""
    return f"--port {port}"


# -- front -------------------------------------------------------------------------------------------
def front_request(url: str, token: str, method: str, action: str, payload: dict[str, Any] | None = None,
                  timeout_s: float = 5.0) -> dict[str, Any]:
    """Call the front's admin API (``/-/mlops/<action>``) with its token; return the JSON answer.

    Raises:
        ServingError: If the front does not answer 200.
    """
    import httpx

    response = httpx.request(method, f"{url}{_ADMIN}/{action}", json=payload, timeout=timeout_s,
                             headers={_TOKEN_HEADER: token})
    if response.status_code != 200:
        raise ServingError(f"The serving front at {url} refused {action}: HTTP {response.status_code} {response.text}")
    return response.json()


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
        >>> from tasks.serving_endpoint import serving_status
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
    standby = state.get("standby")
    if standby:
        out["standby"] = {"bento": standby.get("bento_tag"), "model_version": standby.get("model_version"),
                          "url": standby.get("url"), "pid": standby.get("pid"),
                          "alive": group_alive(standby.get("group")), "expires_at": standby.get("expires_at")}
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
    its workers write what they buffer), the standby backend (``tasks/serving_standby.py``) and
    the front; last, any process still marked with this endpoint (``$MLOPS_SERVING_ENDPOINT``: a
    backend a deployment or the supervisor was starting, a worker orphaned by a killed leader) is
    stopped too. The history is kept.
    Command line: ``python -m tasks.bentoml_serving stop [--port P | --block NAME]``.

    Args:
        serving: The BentoML serving block (None: the embedded default).

    Returns:
        ``{"stopped": [what was stopped]}``.

    Examples:
        >>> from tasks.serving_endpoint import stop_serving
        >>> stop_serving()  # doctest: +SKIP
        {'stopped': ['supervisor (pid 4239)', 'backend churn:v3-... (pids [4242, 4250])', 'front (pid 4240)']}
    """
    serving = serving or BentoMLServing.embedded()
    stopped: list[str] = []
    with state_lock(serving):
        state = read_state(serving)
        supervisor = state.get("supervisor") or {}
        if stop_group(supervisor.get("group"), timeout_s=10):
            stopped.append(f"supervisor (pid {supervisor.get('pid')})")
        live = state.get("live")
        pids = stop_group(group_of(live, backend_marker(int((live or {}).get("port") or 0))))
        if pids:
            stopped.append(f"backend {live.get('bento_tag')} (pids {sorted(pids)})")
        standby = state.get("standby") or {}
        pids = stop_group(standby.get("group"), timeout_s=5)
        if pids:
            stopped.append(f"standby {standby.get('bento_tag')} (pids {sorted(pids)})")
        front = state.get("front") or {}
        if stop_group(group_of(front, FRONT_MARKER)):
            stopped.append(f"front (pid {front['pid']})")
        strays = stop_processes(marked_processes(ENDPOINT_ENV, endpoint_id(serving)), timeout_s=10)
        if strays:
            stopped.append(f"other processes of the endpoint (pids {sorted(strays)})")
        if live:
            history = state.get("history") or []
            history.append({"bento_tag": live.get("bento_tag"), "model_version": live.get("model_version"),
                            "since": live.get("since"), "until": now_iso()})
            state["history"] = history[-HISTORY_KEPT:]
        state.update({"live": None, "front": None, "supervisor": None, "standby": None})
        write_state(serving, state)
    return {"stopped": stopped}
