"""Backends that start before they are needed: launching ``bentoml serve``, its readiness, and the standby.

A deployment spends most of its time waiting for a new backend to be ready (``bentoml serve`` imports
and loads its model in a worker: ~4 s here). The training flow knows which bento comes next as soon as
it promotes a version, so it starts that bento's backend at once, on a private port, while the old
backend still serves: the endpoint's **standby** (:func:`start_standby`). ``deploy-model`` then adopts
a standby of the very bento it deploys (:func:`adopt_standby`) instead of starting one, and still
waits for its readiness, sends the smoke request, switches and verifies through the stable URL: a
standby that is not ready in time, has died, was started with other serving settings or fails the
smoke request is stopped and the deployment starts its own backend as before.

A standby is never orphaned: it is recorded in the endpoint state (``standby``: its process group,
bento, settings and ``expires_at``) and carries the endpoint's marker; ``stop_serving`` stops it;
the endpoint's supervisor stops a standby nobody adopted before it expires (:func:`expire_standby`,
``ttl_s``, 10 minutes by default); a newer standby replaces an older one. So a standby is only
started on an endpoint whose supervisor runs (an endpoint that serves); otherwise the deployment
starts its backend itself. Measure: ``benchmarks/bench_loop.py --verbose`` (the ``deploy-model``
run's ``adopt-standby-backend`` vs ``start-bento-server``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
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
    BackendInfo,
    backend_alive,
    endpoint_id,
    now_iso,
    read_state,
    state_lock,
    write_state,
)
from tasks.serving_processes import group_alive, record_members, start_group, stop_group
from tasks.system import free_port, free_port_in, wait_until

STANDBY_TTL_S = 600.0

__all__ = ["STANDBY_TTL_S", "LaunchedBackend", "StandbyAdoption", "adopt_standby", "backend_port", "backend_ready",
           "expire_standby", "launch_backend", "start_standby"]


@dataclass
class LaunchedBackend:
    """A ``bentoml serve`` process tree just started (not yet ready)."""

    proc: subprocess.Popen
    port: int
    url: str
    log_file: Path
    status_file: Path
    group: dict[str, Any]
    started: float


class StandbyAdoption(BaseModel):
    """What :func:`adopt_standby` found: the adopted backend, or why there is none."""

    backend: BackendInfo | None
    outcome: str


def backend_port(serving: BentoMLServing) -> int:
    """Return a free port for a backend (inside the block's ``backend_port_range`` when set).

    Raises:
        ServingError: If every port of ``backend_port_range`` is taken.
    """
    if serving.backend_port_range is None:
        return free_port()
    port = free_port_in(serving.backend_port_range, exclude=[serving.port])
    if port is None:
        low, high = serving.backend_port_range
        raise ServingError(f"No free port for a backend in the serving block's backend_port_range ({low}, {high}): "
                           f"all {high - low + 1} ports are taken. Stop endpoints you no longer need "
                           "(python -m tasks.bentoml_serving stop --port <port>) or widen backend_port_range.")
    return port


def backend_ready(bento_tag: str, url: str, status_file: Path, log_file: Path) -> bool:
    """Return whether a starting backend is ready: its status file says so and ``/readyz`` answers 200.

    Raises:
        ServingError: If the backend reports that its model failed to load.
    """
    import httpx

    try:
        report = json.loads(status_file.read_text()) if status_file.exists() else {}
    except ValueError:
        report = {}
    if report.get("state") == "failed":
        raise ServingError(f"bento {bento_tag} could not load its model: {report.get('error')}. Log: {log_file}")
    return report.get("state") == "ready" and httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200


def launch_backend(serving: BentoMLServing, bento: BentoInfo) -> LaunchedBackend:
    """Start ``bentoml serve <bento>`` on a free 127.0.0.1 port, marked with the endpoint; do not wait.

    Examples:
        >>> launched = launch_backend(BentoMLServing.embedded(), bento)  # doctest: +SKIP
        >>> launched.url  # doctest: +SKIP
        'http://127.0.0.1:41235'
    """
    folder = serving.home() / "serving"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "backends").mkdir(parents=True, exist_ok=True)
    port = backend_port(serving)
    stem = f"{bento.tag.replace(':', '-')}-{port}"
    log_file = folder / "logs" / f"{stem}.log"
    status_file = folder / "backends" / f"{stem}.status.json"
    status_file.unlink(missing_ok=True)
    started = time.time()
    proc, group = start_group(
        [sys.executable, "-m", "bentoml", "serve", bento.tag, "--host", "127.0.0.1", "--port", str(port)],
        log_file, serving.runtime_env(str(status_file)), endpoint_id(serving), cwd=str(serving.home()))
    return LaunchedBackend(proc=proc, port=port, url=f"http://127.0.0.1:{port}", log_file=log_file,
                           status_file=status_file, group=group, started=started)


def _settings_digest(serving: BentoMLServing) -> str:
    """Digest of what a backend's behaviour depends on (store and runtime settings): adopt only an equal one."""
    settings = {"home": str(serving.home()), **serving.runtime_settings(None)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _discard(record: dict[str, Any], why: str) -> str:
    """Stop a standby's whole process group; return what was done (for logs and summaries)."""
    pids = stop_group(record.get("group"), timeout_s=5)
    run_logger().warning("Standby %s (pid %s) discarded: %s; stopped %s", record.get("bento_tag"), record.get("pid"),
                         why, pids or "nothing (it had exited)")
    return f"discarded: {why}"


@task(name="start-standby-backend", cache_policy=NO_CACHE)
def start_standby(serving: BentoMLServing, bento: BentoInfo, ttl_s: float = STANDBY_TTL_S) -> dict[str, Any] | None:
    """Start the bento's backend while the endpoint still serves the old one, for ``deploy-model`` to adopt.

    Does not wait for readiness (the deployment does). Replaces an older standby of another bento
    or other settings; keeps a running one of the same bento. Only on an endpoint whose supervisor
    runs (it stops a standby nobody adopted within ``ttl_s``).

    Args:
        serving: The BentoML serving block the deployment will use.
        bento: The bento to start (built: ``build_bento``).
        ttl_s: Seconds after which a standby nobody adopted is stopped.

    Returns:
        The standby's record (``bento_tag``, ``url``, ``pid``, ``expires_at``, ...), or None when
        none was started (the endpoint is not supervised, or already serves this bento).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def warm(b: BentoInfo) -> str | None:
        ...     return (start_standby(BentoMLServing.load("local-serving"), b) or {}).get("url")
    """
    logger = run_logger()
    digest = _settings_digest(serving)
    replaced = None
    with state_lock(serving):
        state = read_state(serving)
        current = state.get("standby") or None
        live = state.get("live") or {}
        if not state.get("front") or not group_alive((state.get("supervisor") or {}).get("group")):
            logger.info("No standby for %s: %s has no supervisor running", bento.tag, serving.endpoint_url())
            return None
        if live.get("bento_tag") == bento.tag and backend_alive(live):
            return None
        if current and current.get("bento_tag") == bento.tag and current.get("settings") == digest \
                and group_alive(current.get("group")) and time.time() < float(current.get("expires", 0)):
            return current
        launched = launch_backend(serving, bento)
        record = {"bento_tag": bento.tag, "model_name": bento.model_name, "model_version": bento.model_version,
                  "url": launched.url, "port": launched.port, "pid": launched.proc.pid,
                  "log_file": str(launched.log_file), "status_file": str(launched.status_file),
                  "started": launched.started, "started_at": now_iso(), "expires": launched.started + ttl_s,
                  "expires_at": dt.datetime.fromtimestamp(launched.started + ttl_s, dt.UTC).isoformat(),
                  "settings": digest, "group": launched.group}
        replaced, state["standby"] = current, record
        write_state(serving, state)
    if replaced:
        _discard(replaced, f"replaced by the standby of {bento.tag}")
    logger.info("Standby backend of %s starting on %s (pid %d) while %s serves %s; expires %s", bento.tag,
                launched.url, launched.proc.pid, serving.endpoint_url(), live.get("bento_tag"), record["expires_at"])
    return record


def _standby_problem(serving: BentoMLServing, record: dict[str, Any]) -> str | None:
    if record.get("settings") != _settings_digest(serving):
        return "it was started with other serving settings than this deployment's block"
    if time.time() >= float(record.get("expires", 0)):
        return f"it expired at {record.get('expires_at')}"
    if not group_alive(record.get("group")):
        return "its bentoml serve process is not running"
    return None


@task(name="adopt-standby-backend", cache_policy=NO_CACHE)
def adopt_standby(serving: BentoMLServing, bento: BentoInfo) -> StandbyAdoption:
    """Take over the endpoint's standby backend of this bento once it is ready (see the module docstring).

    The standby is taken out of the endpoint state (one deployment adopts it), then must pass the
    same readiness check as a backend the deployment starts, within the block's
    ``readiness_timeout_s`` counted from the standby's start. A standby that fails is stopped.

    Args:
        serving: The BentoML serving block of the deployment.
        bento: The bento being deployed.

    Returns:
        The adopted backend and ``outcome`` ``"adopted"``; or no backend and ``outcome`` ``"none"``
        (no standby of this bento) or ``"discarded: <why>"``.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def take(b: BentoInfo) -> str:
        ...     return adopt_standby(BentoMLServing.embedded(), b).outcome
    """
    with state_lock(serving):
        state = read_state(serving)
        record = state.get("standby") or {}
        if record.get("bento_tag") != bento.tag:
            return StandbyAdoption(backend=None, outcome="none")
        state["standby"] = None
        write_state(serving, state)
    problem = _standby_problem(serving, record)
    if problem:
        return StandbyAdoption(backend=None, outcome=_discard(record, problem))
    url, status_file, log_file = record["url"], Path(record["status_file"]), Path(record["log_file"])

    def ready() -> bool:
        if not group_alive(record.get("group")):
            raise ServingError(f"its bentoml serve process exited before it was ready (log {log_file})")
        return backend_ready(bento.tag, url, status_file, log_file)

    left = float(record["started"]) + serving.readiness_timeout_s - time.time()
    try:
        wait_until(ready, max(left, 0.0), f"standby bentoml serve {bento.tag}", interval=0.05)
    except (ServingError, TimeoutError) as exc:
        return StandbyAdoption(backend=None, outcome=_discard(record, f"not ready: {exc}"[:1000]))
    seconds = time.time() - float(record["started"])
    group = record_members(record["group"])
    run_logger().info("Adopted the standby backend of %s on %s (pid %d), ready %.1fs after it started", bento.tag,
                      url, record["pid"], seconds)
    backend = BackendInfo(bento_tag=bento.tag, model_name=bento.model_name, model_version=bento.model_version,
                          run_id=bento.run_id, data_rev=bento.data_rev, labels=bento.labels, url=url,
                          port=int(record["port"]), pid=int(record["pid"]), log_file=str(log_file),
                          status_file=str(status_file), started_at=record["started_at"], ready_seconds=seconds,
                          group=group, standby=True)
    return StandbyAdoption(backend=backend, outcome="adopted")


def expire_standby(serving: BentoMLServing) -> list[str]:
    """Stop the endpoint's standby when it expired or its process died (the supervisor calls this).

    Returns:
        What was stopped (empty: nothing to do).

    Examples:
        >>> expire_standby(BentoMLServing.embedded())  # doctest: +SKIP
        []
    """
    record = read_state(serving).get("standby")
    if not record or (time.time() < float(record.get("expires", 0)) and group_alive(record.get("group"))):
        return []
    with state_lock(serving):
        state = read_state(serving)
        if (state.get("standby") or {}).get("pid") != record.get("pid"):
            return []  # adopted or replaced meanwhile
        state["standby"] = None
        write_state(serving, state)
    why = "nobody adopted it before it expired" if time.time() >= float(record.get("expires", 0)) else \
        "its bentoml serve process is not running"
    return [f"standby {record.get('bento_tag')} {_discard(record, why)}"]
