"""Supervision of a serving endpoint: a dead front or backend is noticed and restarted without a person.

Why a supervisor process per endpoint rather than a scheduled ``watch-serving`` deployment: a
schedule needs a running Prefect server and worker, and its delay is the schedule interval plus the
worker's poll (10-15 s here) plus a flow run's fixed cost, so clients could wait minutes; a small
local process checks every ``supervise_interval_s`` (1 s) and needs nothing else to run, and the
time to service again is bounded by that interval plus a backend's readiness (~9 s). The same
check is one function, :func:`heal_endpoint` (``python -m tasks.bentoml_serving heal``), so a
scheduled ``watch-serving`` deployment can still run it as a backstop, for example to restart a
supervisor that was itself killed; ``deploy-model`` also restarts a missing supervisor.

One check (:func:`heal_endpoint`):

* front not running -> start a new one on the stable port, forwarding to the live backend;
* a standby backend (``tasks/serving_standby.py``) nobody adopted before it expired, or whose
  process died -> stop it and drop it from the state;
* live backend's ``bentoml serve`` leader not running -> stop what is left of its group (workers
  orphaned by a SIGKILL keep listening otherwise), start the same bento again (outside the state
  lock, so a deployment is never blocked for a backend's start-up), then, under the lock and only
  if that backend is still the live one, point the front at the new backend. A deployment that
  swapped in another backend meanwhile wins: the replacement is stopped.

Every restart is recorded in the endpoint state (``restarts``: what, when, why) and shown by
``serving_status``. The supervisor exits when the endpoint is stopped or another supervisor
replaces it (the state names the supervisor that owns the endpoint).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.bentoml_serving import BentoMLServing
from tasks import serving_endpoint as endpoint
from tasks.bentoml_packaging import BentoInfo
from tasks.bentoml_serving import ensure_front, start_bento_server
from tasks.exceptions import ServingError
from tasks.logs import run_logger
from tasks.serving_processes import group_alive, start_group, stop_group
from tasks.serving_standby import expire_standby

_RESTARTS_KEPT = 50
SUPERVISOR_MARKER = "tasks.bentoml_serving supervise"


def _record_restart(state: dict[str, Any], what: str, why: str, pid: int | None) -> None:
    restarts = state.get("restarts") or []
    restarts.append({"what": what, "why": why, "at": endpoint.now_iso(), "pid": pid})
    state["restarts"] = restarts[-_RESTARTS_KEPT:]


def _bento_of(live: dict[str, Any]) -> BentoInfo:
    """Return the bento of a recorded live backend (enough to start it again: it was checked when deployed)."""
    return BentoInfo(tag=live["bento_tag"], model_tag="", model_name=live["model_name"],
                     model_version=str(live["model_version"]), run_id=live.get("run_id"),
                     data_rev=live.get("data_rev"), path="", labels=live.get("labels") or {}, features=[],
                     input_example=[], built=False, seconds=0.0)


def _restart_backend(serving: BentoMLServing, dead: dict[str, Any]) -> str:
    logger = run_logger()
    group = endpoint.group_of(dead, endpoint.backend_marker(int(dead.get("port") or 0))) or dead.get("group")
    leftovers = stop_group(group, timeout_s=5)
    try:
        backend = start_bento_server.fn(serving, _bento_of(dead))
    except ServingError as exc:
        logger.error("Restarting %s failed: %s", dead.get("bento_tag"), exc)
        return f"backend {dead.get('bento_tag')}: restart failed: {exc}"
    with endpoint.state_lock(serving):
        state = endpoint.read_state(serving)
        live = state.get("live") or {}
        if live.get("pid") != dead.get("pid") or state.get("front") is None:
            replaced = True  # a deployment or a stop came first: that decision wins
        else:
            replaced = False
            front = state["front"]
            label = {"bento": backend.bento_tag, "model_name": backend.model_name,
                     "model_version": backend.model_version}
            endpoint.front_request(serving.endpoint_url(), front["token"], "POST", "switch",
                           {"backend": backend.url, "label": label})
            state["live"] = {**backend.model_dump(), "since": live.get("since") or endpoint.now_iso()}
            _record_restart(state, f"backend {backend.bento_tag}",
                            f"bentoml serve (pid {dead.get('pid')}) was not running; stopped its leftover "
                            f"processes {sorted(leftovers)}", backend.pid)
            endpoint.write_state(serving, state)
    if replaced:
        stop_group(backend.group, timeout_s=5)
        return f"backend {dead.get('bento_tag')}: replaced meanwhile; restart discarded"
    logger.warning("Restarted backend %s on %s (pid %d); the dead one left %s", backend.bento_tag, backend.url,
                   backend.pid, leftovers)
    return f"backend {backend.bento_tag} restarted (pid {backend.pid})"


def heal_endpoint(serving: BentoMLServing) -> dict[str, Any]:
    """Check the endpoint's processes once: restart a dead front or backend, stop an expired standby.

    Args:
        serving: The BentoML serving block of the endpoint.

    Returns:
        ``{"actions": [what was restarted, or why not]}`` (empty: all was well or nothing is deployed).

    Examples:
        >>> from tasks.bentoml_supervisor import heal_endpoint
        >>> heal_endpoint(BentoMLServing.embedded())  # doctest: +SKIP
        {'actions': []}
    """
    actions: list[str] = expire_standby(serving)
    state = endpoint.read_state(serving)
    live = state.get("live")
    if not live or state.get("front") is None:
        return {"actions": actions}  # nothing deployed, or stopped on purpose
    if not endpoint.front_alive(state.get("front")):
        front = ensure_front.fn(serving)
        with endpoint.state_lock(serving):
            current = endpoint.read_state(serving)
            _record_restart(current, "front", "the front process was not running", front["pid"])
            endpoint.write_state(serving, current)
        actions.append(f"front restarted (pid {front['pid']})")
    if not endpoint.backend_alive(live):
        actions.append(_restart_backend(serving, live))
    return {"actions": actions}


@task(name="heal-serving-endpoint", cache_policy=NO_CACHE)
def heal_serving_endpoint(serving: BentoMLServing) -> dict[str, Any]:
    """Run :func:`heal_endpoint` as a task (the scheduled ``watch-serving`` backstop).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def watch() -> list[str]:
        ...     return heal_serving_endpoint(BentoMLServing.embedded())["actions"]
    """
    return heal_endpoint(serving)


def run_supervisor(serving: BentoMLServing) -> int:
    """Run :func:`heal_endpoint` every ``supervise_interval_s`` until the endpoint stops or SIGTERM."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logger = logging.getLogger("prefect_mlops")
    stop = threading.Event()

    def _exit(*_: Any) -> None:
        # Exit at once, even while waiting for the state lock that stop_serving holds; a backend this
        # process was starting carries the endpoint's marker, so stop_serving stops it next.
        stop.set()
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)
    me = os.getpid()
    logger.info("supervising %s (pid %d)", serving.endpoint_url(), me)
    while not stop.is_set():
        state = endpoint.read_state(serving)
        owner = (state.get("supervisor") or {}).get("pid")
        if (owner is not None and owner != me) or state.get("front") is None:
            logger.info("endpoint stopped or supervised by pid %s: exiting", owner)
            return 0
        try:
            actions = heal_endpoint(serving)["actions"]
            if actions:
                logger.warning("healed %s: %s", serving.endpoint_url(), actions)
        except Exception:  # noqa: BLE001 - a failed check is retried at the next interval
            logger.exception("check of %s failed", serving.endpoint_url())
        stop.wait(serving.supervise_interval_s)
    return 0


@task(name="ensure-serving-supervisor", cache_policy=NO_CACHE)
def ensure_supervisor(serving: BentoMLServing) -> dict[str, Any] | None:
    """Make sure the endpoint's supervisor runs (start it if not); None when the block turns supervision off.

    Args:
        serving: The BentoML serving block (``supervise``, ``supervise_interval_s``).

    Returns:
        ``{"pid", "started_at"}`` of the supervisor, or None.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def watch() -> int | None:
        ...     return (ensure_supervisor(BentoMLServing.embedded()) or {}).get("pid")
    """
    if not serving.supervise:
        return None
    folder = serving.home() / "serving"
    config = folder / f"supervisor-{serving.port}.json"
    with endpoint.state_lock(serving):
        state = endpoint.read_state(serving)
        current = state.get("supervisor") or {}
        if group_alive(current.get("group")):
            return {"pid": current["pid"], "started_at": current.get("started_at")}
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        config.write_text(serving.model_dump_json(include=set(BentoMLServing.model_fields)))
        proc, group = start_group([sys.executable, "-m", "tasks.bentoml_serving", "supervise", "--config",
                                   str(config)], folder / "logs" / f"supervisor-{serving.port}.log",
                                  serving.subprocess_env(), endpoint.endpoint_id(serving),
                                  cwd=str(Path(__file__).resolve().parent.parent))
        state["supervisor"] = {"pid": proc.pid, "started_at": endpoint.now_iso(), "group": group}
        endpoint.write_state(serving, state)
    run_logger().info("Supervisor of %s started (pid %d)", serving.endpoint_url(), proc.pid)
    return {"pid": proc.pid, "started_at": state["supervisor"]["started_at"]}


__all__ = ["ensure_supervisor", "heal_endpoint", "heal_serving_endpoint", "run_supervisor"]
