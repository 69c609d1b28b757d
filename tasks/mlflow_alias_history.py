"""MLflow registry alias moves and their history: ``set_model_alias``, ``alias_history``, rollback targets.

Every alias move is recorded as a registered-model tag ``mlops.alias_history.<key>``
holding a JSON :class:`AliasMove` (who, when, from, to, why, flow run), so "what served
last Tuesday" and ``rollback`` are one call and live with the registry itself. Keys are
unique per move (time in ns + random suffix), never a read-then-incremented counter, and
every move runs under the model's registry lock (tasks/mlflow_locks.py), so concurrent
moves neither overwrite a record nor break the from -> to chain.

As the MLflow registry docs describe, ``challenger`` is removed from a version once it becomes
``champion`` (recorded as a move to no version). After every move the history is also written
as a readable table, ``alias_history.md``, on the run of the version that moved: the tags stay
the record, the file is the view.
"""

from __future__ import annotations

import datetime as dt
import getpass
import tempfile
import time
import uuid
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.mlflow_server import MlflowServer
from tasks.exceptions import RegistryError
from tasks.lineage import flow_run_url
from tasks.logs import run_logger
from tasks.mlflow_locks import ModelLock, acquire, release
from tasks.mlflow_registry import _ADVICE, CHALLENGER, CHAMPION, _not_found, alias_version

HISTORY_PREFIX = "mlops.alias_history."
#: The history as a markdown table, on the run of the version an alias last moved to.
HISTORY_ARTIFACT = "alias_history.md"


class AliasMove(BaseModel):
    """One recorded alias move."""

    seq: int
    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    at: str
    by: str
    reason: str
    flow_run_id: str | None = None
    key: str | None = None



def alias_history(mlflow_server: MlflowServer, name: str, alias: str | None = None) -> list[AliasMove]:
    """Return the recorded alias moves of a model, oldest first.

    Args:
        mlflow_server: The MLflow block.
        name: Registered model name.
        alias: Only moves of this alias.

    Returns:
        The moves.
    """
    from mlflow.exceptions import MlflowException

    try:
        tags = mlflow_server.get_client().get_registered_model(name).tags or {}
    except MlflowException as exc:
        if _not_found(exc):
            return []
        raise RegistryError(f"Reading the alias history of {name!r} failed: {exc}") from exc
    moves = []
    for key, value in tags.items():
        if key.startswith(HISTORY_PREFIX):
            move = AliasMove.model_validate_json(value)
            moves.append(move.model_copy(update={"key": key[len(HISTORY_PREFIX):]}))
    # Old records have 6-digit counters as keys, new ones 20-digit ns times: both sort by (time, key).
    moves.sort(key=lambda m: (dt.datetime.fromisoformat(m.at), m.key or ""))
    moves = [m.model_copy(update={"seq": i}) for i, m in enumerate(moves, start=1)]
    return [m for m in moves if alias is None or m.alias == alias]


def version_at(history: list[AliasMove], alias: str, when: dt.datetime) -> str | None:
    """Return which version an alias pointed to at a moment ("what served last Tuesday")."""
    current = None
    for move in history:
        if move.alias == alias and dt.datetime.fromisoformat(move.at) <= when:
            current = move.to_version
    return current


@task(name="list-alias-history", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def list_alias_history(mlflow_server: MlflowServer, name: str, alias: str | None = None) -> list[AliasMove]:
    """List the recorded alias moves of a model, oldest first.

    Args:
        mlflow_server: The MLflow block.
        name: Registered model name.
        alias: Only moves of this alias.

    Returns:
        The moves.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def audit(name: str) -> int:
        ...     return len(list_alias_history(MlflowServer.embedded(), name, "champion"))
    """
    return alias_history(mlflow_server, name, alias)


@task(name="set-model-alias", cache_policy=NO_CACHE)
def set_model_alias(mlflow_server: MlflowServer, name: str, alias: str, version: str, reason: str,
                    flow_run_id: str | None = None, lock: ModelLock | None = None) -> AliasMove:
    """Point an alias at a version and record the move (who, when, from, to, why), under the model's lock.

    Args:
        mlflow_server: The MLflow block.
        name: Registered model name.
        alias: Alias to move (``champion``, ``challenger``).
        version: Version it now points to.
        reason: Why (recorded with the move).
        flow_run_id: Prefect flow run that moved it.
        lock: The model's registry lock if the caller holds it; None takes (and releases) it here.

    Returns:
        The recorded move.

    Raises:
        RegistryError: If the version does not exist or the registry fails.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def promote(version: str) -> None:
        ...     set_model_alias(MlflowServer.embedded(), "churn-classifier", "champion", version, "passed the gate")
    """
    held = lock or acquire(mlflow_server, name, flow_run_id)
    try:
        move = move_alias(mlflow_server, name, alias, str(version), reason, flow_run_id)
        if alias == CHAMPION:
            clear_alias(mlflow_server, name, CHALLENGER, str(version), f"v{version} became {CHAMPION}", flow_run_id)
    finally:
        if lock is None:
            release(mlflow_server, held)
    run_logger().info("Alias %s of %s: %s -> %s (%s)", alias, name, move.from_version, version, reason)
    publish_alias_history(mlflow_server, name, str(version))
    return move


def clear_alias(mlflow_server: MlflowServer, name: str, alias: str, version: str, reason: str,
                flow_run_id: str | None = None) -> AliasMove | None:
    """Remove ``alias`` if it points at ``version`` and record the move (to no version); hold the model's lock."""
    from mlflow.exceptions import MlflowException

    current = alias_version(mlflow_server, name, alias)
    if current is None or current.version != str(version):
        return None
    move = _record(name, alias, current.version, None, reason, flow_run_id)
    client = mlflow_server.get_client()
    try:
        client.delete_registered_model_alias(name, alias)
        client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{move.key}", move.model_dump_json(exclude={"key"}))
    except MlflowException as exc:
        raise RegistryError(f"Removing alias {alias!r} of {name!r} from version {version} failed: {exc}. "
                            f"{_ADVICE}") from exc
    return move


def _record(name: str, alias: str, from_version: str | None, to_version: str | None, reason: str,
            flow_run_id: str | None) -> AliasMove:
    key = f"{time.time_ns():020d}.{uuid.uuid4().hex[:8]}"
    return AliasMove(seq=0, model=name, alias=alias, from_version=from_version, to_version=to_version,
                     at=dt.datetime.now(dt.UTC).isoformat(), by=getpass.getuser(), reason=reason[:1000],
                     flow_run_id=flow_run_id, key=key)


def history_markdown(name: str, moves: list[AliasMove]) -> str:
    """Return the alias history of a model as a markdown table, newest first."""
    lines = [f"# Alias history of `{name}`", "",
             "Every move of an alias (who, when, from, to, why); `-` is no version. Newest first.", "",
             "| # | when (UTC) | alias | from | to | by | why | Prefect flow run |",
             "|---|---|---|---|---|---|---|---|"]
    for m in reversed(moves):
        url = flow_run_url(m.flow_run_id) if m.flow_run_id else None
        run = f"[{m.flow_run_id[:8]}]({url})" if url and m.flow_run_id else (m.flow_run_id or "-")
        why = m.reason.replace("|", "\\|").replace("\n", " ")
        why = why if len(why) <= 140 else why[:139] + "…"  # the full reason stays in the tag
        lines.append(f"| {m.seq} | {m.at[:19].replace('T', ' ')} | {m.alias} | {m.from_version or '-'} | "
                     f"{m.to_version or '-'} | {m.by} | {why} | {run} |")
    return "\n".join(lines) + "\n"


def model_description(name: str, moves: list[AliasMove], version: str, run_id: str) -> str:
    """Return the registered model's description: where each alias points now and the last moves."""
    current: dict[str, str | None] = {}
    for move in moves:
        current[move.alias] = move.to_version
    now = ", ".join(f"`{alias}` -> v{to}" for alias, to in sorted(current.items()) if to) or "no alias set"
    table = history_markdown(name, moves[-5:]).split("\n", 4)[4]  # the table rows only, newest first
    return (f"Registered by prefect-mlops continuous training. Now: {now}.\n\nLast alias moves (all of them: "
            f"`{HISTORY_ARTIFACT}` on the run of v{version}, `{run_id}`; the record: the `{HISTORY_PREFIX}*` tags):"
            f"\n\n{table}")


def publish_alias_history(mlflow_server: MlflowServer, name: str, version: str) -> str | None:
    """Write the history as ``alias_history.md`` on the run of ``version`` and the model's description.

    A failure is logged, not raised: the tags are the record, these are views of it.

    Returns:
        The artifact path, or None if the version has no run or the write failed (the tags stay the record).
    """
    try:
        client = mlflow_server.get_client()
        run_id = client.get_model_version(name, version).run_id
        if not run_id:
            return None
        moves = alias_history(mlflow_server, name)
        with tempfile.TemporaryDirectory(prefix="mlops-history-") as tmp:
            path = Path(tmp) / HISTORY_ARTIFACT
            path.write_text(history_markdown(name, moves), encoding="utf-8")
            client.log_artifact(run_id, str(path))
        client.update_registered_model(name, description=model_description(name, moves, version, run_id))
    except Exception as exc:  # noqa: BLE001 - a view of the recorded tags; the move itself is done
        run_logger().warning("Writing %s of %s v%s failed: %s", HISTORY_ARTIFACT, name, version, exc)
        return None
    return HISTORY_ARTIFACT


def move_alias(mlflow_server: MlflowServer, name: str, alias: str, version: str, reason: str,
               flow_run_id: str | None = None) -> AliasMove:
    """Move an alias and record the move under a unique key; call it only while holding the model's lock."""
    from mlflow.exceptions import MlflowException

    client = mlflow_server.get_client()
    previous = alias_version(mlflow_server, name, alias)
    move = _record(name, alias, previous.version if previous else None, str(version), reason, flow_run_id)
    key = move.key
    try:
        client.set_registered_model_alias(name, alias, str(version))
        client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{key}", move.model_dump_json(exclude={"key"}))
        client.set_model_version_tag(name, str(version), f"mlops.alias.{alias}.since", move.at)
    except MlflowException as exc:
        raise RegistryError(f"Moving alias {alias!r} of {name!r} to version {version} failed: {exc}. The alias "
                            f"may or may not have moved; rerun to complete it. {_ADVICE}") from exc
    return move


def rollback_target(history: list[AliasMove], current: str | None, alias: str = CHAMPION) -> str | None:
    """Return the version that served before ``current`` under ``alias``, from the history."""
    for move in reversed(history):
        if move.alias == alias and move.to_version == current and move.from_version not in (None, current):
            return move.from_version
    return None




@task(name="restore-alias", cache_policy=NO_CACHE)
def restore_alias(mlflow_server: MlflowServer, name: str, alias: str, failed_version: str,
                  serving_version: str | None, reason: str, flow_run_id: str | None = None) -> str | None:
    """Move ``alias`` off a version that failed to deploy or roll out, back to what serves (recorded).

    Only when the alias still points to ``failed_version``: back to ``serving_version`` (what the
    endpoint answers with), else to the version the alias pointed to before (its history).

    Args:
        mlflow_server: The MLflow block.
        name: Registered model name.
        alias: The alias (``champion``).
        failed_version: The version that did not make it.
        serving_version: The version the production endpoint serves (None: none of this model).
        reason: Why (recorded with the move).
        flow_run_id: Prefect flow run that moves it.

    Returns:
        The version the alias now points to, or None when it was not moved.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def undo(version: str) -> str | None:
        ...     return restore_alias(MlflowServer.embedded(), "churn-classifier", "champion", version, "2", "failed")
    """
    current = alias_version(mlflow_server, name, alias)
    if current is None or current.version != failed_version:
        return None
    back_to = serving_version or rollback_target(alias_history(mlflow_server, name, alias), failed_version, alias)
    if not back_to or back_to == failed_version:
        return None
    set_model_alias.fn(mlflow_server, name, alias, back_to, reason[:900], flow_run_id)
    return back_to
