"""A per-model lock held in the MLflow registry itself, so it works against a remote ``mlflow server``.

MLflow has no compare-and-set, but ``create_registered_model(name)`` fails with
``RESOURCE_ALREADY_EXISTS`` when the name exists: the backend's unique key on the name
makes it atomic, for SQLite and PostgreSQL backends alike. The lock of model ``<m>`` is
the registered model ``<m>.lock``; its tags name the owner (a random token), the Prefect
flow run, the host and process, and when the lease expires. Releasing deletes it.

A lock is stale when its lease has expired, or when its owner process ran on this host
and is gone (SIGKILL, OOM). Breaking a stale lock is itself serialised by the same
primitive: the breaker first creates ``<m>.lock.break.<owner>`` (unique per stale
acquisition), then re-reads the lock and deletes it only if the same owner still holds
it. The one window left is a stale-but-alive owner releasing at the very moment a
breaker deletes; a lease much longer than the locked step (seconds) makes that moot.

Why not ``tasks/locks.py`` (``flock``): it serialises only processes of one machine,
while trainings may run on several workers against one registry.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.mlflow_server import MlflowServer
from tasks.exceptions import RegistryError
from tasks.logs import run_logger

LOCK_SUFFIX = ".lock"
TAG_OWNER = "mlops.lock.owner"
TAG_EXPIRES = "mlops.lock.expires_at"
TAG_FLOW_RUN = "mlops.lock.flow_run_id"
TAG_HOST = "mlops.lock.host"
TAG_PID = "mlops.lock.pid"
TAG_PID_STARTED = "mlops.lock.pid_started"
TAG_PURPOSE = "mlops.lock.purpose"


class ModelLock(BaseModel):
    """A held lock (small and serialisable: it travels between tasks)."""

    model: str
    lock_name: str
    owner: str
    expires_at: float
    flow_run_id: str | None = None


def lock_name(model: str) -> str:
    """Return the registered-model name that holds the lock of ``model``."""
    return f"{model}{LOCK_SUFFIX}"


def is_lock_name(name: str) -> bool:
    """Return whether a registered-model name is a lock (or a lock breaker), not a model."""
    return name.endswith(LOCK_SUFFIX) or f"{LOCK_SUFFIX}.break." in name


def process_identity() -> dict[str, str]:
    """Return host, pid and the pid's start time of this process (a pid alone is reused)."""
    import psutil

    return {"host": socket.gethostname(), "pid": str(os.getpid()),
            "started": f"{psutil.Process().create_time():.3f}"}


def process_alive(host: str | None, pid: str | None, started: str | None) -> bool | None:
    """Whether a recorded process still runs: True / False on this host, None when it cannot be told."""
    import psutil

    if not host or not pid or host != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - float(started)) < 1.0
    except (psutil.NoSuchProcess, ValueError):
        return False


def flow_run_state(flow_run_id: str | None) -> Any:
    """Return the Prefect state of a flow run, or None when it cannot be read (no id, unknown id, no API)."""
    if not flow_run_id:
        return None
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(uuid.UUID(flow_run_id)).state
    except Exception:  # unknown id, another Prefect server: undecidable from Prefect
        return None


def _not_exists(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _holder(client, name: str) -> dict[str, str] | None:  # noqa: ANN001 - MlflowClient, imported lazily
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).tags or {})
    except MlflowException as exc:
        if _not_exists(exc):
            return None
        raise


def _stale_reason(holder: dict[str, str], now: float) -> str | None:
    try:
        expires = float(holder.get(TAG_EXPIRES, "0"))
    except ValueError:
        expires = 0.0
    if expires < now:
        return f"lease expired {now - expires:.0f}s ago"
    if process_alive(holder.get(TAG_HOST), holder.get(TAG_PID), holder.get(TAG_PID_STARTED)) is False:
        return f"owner process {holder.get(TAG_PID)} on {holder.get(TAG_HOST)} is gone"
    state = flow_run_state(holder.get(TAG_FLOW_RUN))
    if state is not None and state.is_final():  # its flow run ended without releasing (e.g. the registry was down)
        return f"owner flow run {holder.get(TAG_FLOW_RUN)} ended {state.type.value}"
    return None


def _break(client, name: str, holder: dict[str, str], reason: str) -> None:  # noqa: ANN001
    from mlflow.exceptions import MlflowException

    owner = holder.get(TAG_OWNER, "unknown")
    breaker = f"{name}.break.{owner}"
    try:
        client.create_registered_model(breaker, tags={TAG_PURPOSE: f"breaking stale lock {owner}: {reason}"})
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_ALREADY_EXISTS":
            return  # someone else breaks this very lock
        raise
    try:
        current = _holder(client, name)
        if current is not None and current.get(TAG_OWNER) == owner:
            try:
                client.delete_registered_model(name)
            except MlflowException as exc:
                if not _not_exists(exc):  # already gone: its owner released it after all
                    raise
            run_logger().warning("Broke stale lock %s of flow run %s (%s)", name, holder.get(TAG_FLOW_RUN), reason)
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(breaker)


def acquire(mlflow_server: MlflowServer, model: str, flow_run_id: str | None = None, lease_s: float = 900.0,
            timeout_s: float = 900.0, poll_s: float = 0.5) -> ModelLock:
    """Take the lock of ``model``, waiting up to ``timeout_s`` (see the module docstring)."""
    from mlflow.exceptions import MlflowException

    client = mlflow_server.get_client()
    name = lock_name(model)
    owner = uuid.uuid4().hex
    me = process_identity()
    deadline = time.monotonic() + timeout_s
    holder: dict[str, str] | None = None
    while True:
        expires = time.time() + lease_s
        tags = {TAG_OWNER: owner, TAG_EXPIRES: f"{expires:.3f}", TAG_FLOW_RUN: flow_run_id or "", TAG_HOST: me["host"],
                TAG_PID: me["pid"], TAG_PID_STARTED: me["started"], TAG_PURPOSE: f"gate-and-promote lock of {model}"}
        try:
            try:
                client.create_registered_model(name, tags=tags, description=(
                    f"Lock of the gate-and-promote step of {model!r} (prefect-mlops). Deleted when released; "
                    "delete it by hand only if the flow run named in its tags is dead."))
                return ModelLock(model=model, lock_name=name, owner=owner, expires_at=expires, flow_run_id=flow_run_id)
            except MlflowException as exc:
                if _not_exists(exc):
                    # The server saw the name taken, then could not read it back to word its error: the holder
                    # released in between (mlflow's SqlAlchemyStore re-reads the model on IntegrityError). Free again.
                    continue
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
            holder = _holder(client, name)
            if holder is None:
                continue  # released between our create and read: try again at once
            reason = _stale_reason(holder, time.time())
            if reason:
                _break(client, name, holder, reason)
                continue
        except MlflowException as exc:
            raise RegistryError(
                f"Taking the registry lock {name!r} of model {model!r} at {mlflow_server.tracking_uri} failed: {exc}. "
                "Nothing was promoted; check that the MLflow server is reachable, then rerun.") from exc
        if time.monotonic() > deadline:
            raise RegistryError(
                f"Timed out after {timeout_s:.0f}s waiting for the registry lock {name!r} of model {model!r}, held by "
                f"flow run {holder.get(TAG_FLOW_RUN) or '?'} (pid {holder.get(TAG_PID)} on {holder.get(TAG_HOST)}) "
                f"until {holder.get(TAG_EXPIRES)} (epoch s). Nothing was promoted. Wait for that run, or if it is dead "
                f"delete the registered model {name!r}, then rerun.")
        time.sleep(poll_s)  # waiting on a remote condition: the holder releases or its lease ends


def release(mlflow_server: MlflowServer, lock: ModelLock) -> bool:
    """Release a held lock; returns False (and warns) if it was no longer ours (broken as stale)."""
    from mlflow.exceptions import MlflowException

    client = mlflow_server.get_client()
    try:
        holder = _holder(client, lock.lock_name)
        if holder is None or holder.get(TAG_OWNER) != lock.owner:
            run_logger().warning("Lock %s was no longer held by this run (lease ended and it was broken); the "
                                 "registry moves made under it were still serialised up to then", lock.lock_name)
            return False
        client.delete_registered_model(lock.lock_name)
    except MlflowException as exc:
        if _not_exists(exc):
            return False
        raise RegistryError(f"Releasing the registry lock {lock.lock_name!r} failed: {exc}. It is broken after its "
                            f"lease (at {lock.expires_at:.0f} epoch s) or when this process is gone.") from exc
    return True


@contextlib.contextmanager
def model_lock(mlflow_server: MlflowServer, model: str, flow_run_id: str | None = None,
               lease_s: float = 900.0, timeout_s: float = 900.0) -> Iterator[ModelLock]:
    """Hold the lock of ``model`` for the ``with`` block (outside tasks, e.g. scripts and tests).

    Examples:
        >>> with model_lock(MlflowServer.load("prod-mlflow"), "churn-classifier"):  # doctest: +SKIP
        ...     pass
    """
    lock = acquire(mlflow_server, model, flow_run_id, lease_s, timeout_s)
    try:
        yield lock
    finally:
        release(mlflow_server, lock)


@task(name="acquire-model-lock", cache_policy=NO_CACHE)
def acquire_model_lock(mlflow_server: MlflowServer, model: str, flow_run_id: str | None = None,
                       lease_s: float = 900.0, timeout_s: float = 900.0) -> ModelLock:
    """Take the per-model registry lock that serialises gate-and-promote steps (waits for a holder).

    Not retried by Prefect: it already waits and breaks stale locks itself.

    Args:
        mlflow_server: The MLflow block.
        model: Registered model name.
        flow_run_id: The Prefect flow run taking it (recorded on the lock).
        lease_s: After this many seconds the lock counts as stale.
        timeout_s: How long to wait for another holder.

    Returns:
        The held lock (pass it to :func:`release_model_lock`).

    Raises:
        RegistryError: The registry failed, or the lock stayed held by a live run past ``timeout_s``.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def serialised(name: str) -> None:
        ...     lock = acquire_model_lock(MlflowServer.embedded(), name)
        ...     release_model_lock(MlflowServer.embedded(), lock)
    """
    lock = acquire(mlflow_server, model, flow_run_id, lease_s, timeout_s)
    run_logger().info("Holding registry lock %s", lock.lock_name)
    return lock


@task(name="release-model-lock", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def release_model_lock(mlflow_server: MlflowServer, lock: ModelLock) -> bool:
    """Release the per-model registry lock (idempotent: deletes it only while this owner holds it).

    Args:
        mlflow_server: The MLflow block.
        lock: The lock from :func:`acquire_model_lock`.

    Returns:
        Whether this call released it.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def serialised(name: str) -> None:
        ...     release_model_lock(MlflowServer.embedded(), acquire_model_lock(MlflowServer.embedded(), name))
    """
    return release(mlflow_server, lock)
