"""What the command line checks before it reads a registry: that it exists, answers and holds the model.

Every failure is a :class:`CliError` whose message names the registry (block and URI), the model
and what to pass instead; the command then exits non-zero. Nothing here creates a database: an
SQLite registry that does not exist is reported, not opened (opening it would create it empty).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.exceptions import MlopsError

HINT = ("pass --mlflow-block NAME (a saved MlflowServer block, e.g. demo-mlflow after `make demo`; "
        "`prefect block ls` lists them)")


class CliError(MlopsError):
    """A command cannot do what was asked; the message says why and what to do."""


def _where(block_name: str | None, uri: str) -> str:
    return f"registry {uri} (block {block_name!r})" if block_name else f"the embedded registry {uri}"


def sqlite_path(uri: str) -> Path | None:
    """Return the database file of a ``sqlite:///`` URI, or None for another scheme."""
    if not uri.startswith("sqlite:"):
        return None
    return Path(uri.split("sqlite:///", 1)[-1]) if "sqlite:///" in uri else Path(uri.removeprefix("sqlite:"))


def open_registry(block_name: str | None, timeout_s: float = 5.0) -> Any:
    """Return the MLflow block to read, after checking that its registry exists and answers.

    Args:
        block_name: A saved ``MlflowServer`` block, or None for the embedded SQLite registry.
        timeout_s: Seconds to wait for an HTTP registry's health check.

    Returns:
        The ``MlflowServer`` block.

    Raises:
        CliError: The block cannot be loaded, the SQLite database does not exist, or the server
            does not answer.
    """
    import httpx

    from blocks.mlflow_server import MlflowServer

    if block_name:
        try:
            server = MlflowServer.load(block_name)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported with the block's name
            raise CliError(f"cannot load the MlflowServer block {block_name!r}: {exc}. Check the name "
                           "(`prefect block ls`) and that PREFECT_API_URL names the Prefect server that has it."
                           ) from exc
    else:
        server = MlflowServer.embedded()
    uri = server.registry_uri or server.tracking_uri
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise CliError(f"no MLflow database at {db} ({_where(block_name, uri)}): nothing was registered there. "
                       f"If your models are in another registry, {HINT}; or set PREFECT_MLOPS_HOME to the state "
                       "folder that holds them.")
    if uri.startswith(("http://", "https://")):
        try:
            response = httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise CliError(f"{_where(block_name, uri)} does not answer ({exc!r}): start the MLflow server, or "
                           f"{HINT} naming one that runs.") from exc
    return server


def registered_models(server: Any, block_name: str | None) -> list[str]:
    """Return the names of the registered models.

    Raises:
        CliError: The registry cannot be read.
    """
    uri = server.registry_uri or server.tracking_uri
    try:
        models = server.get_client().search_registered_models(max_results=1000)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for an unreadable store
        raise CliError(f"cannot read {_where(block_name, uri)}: {exc}") from exc
    from tasks.mlflow_locks import is_lock_name

    return sorted(m.name for m in models if not is_lock_name(m.name))


def resolve_model(server: Any, block_name: str | None, model: str | None) -> str:
    """Return the model a command is about: ``model`` if registered, else the only registered one.

    Args:
        server: The MLflow block (from :func:`open_registry`).
        block_name: Its saved name, for messages.
        model: The ``--model`` given, or None.

    Returns:
        A registered model name.

    Raises:
        CliError: The registry is empty, the model is not in it, or no ``--model`` was given and
            there are several.
    """
    uri = server.registry_uri or server.tracking_uri
    names = registered_models(server, block_name)
    if not names:
        raise CliError(f"{_where(block_name, uri)} has no registered model: train one first "
                       f"(`prefect-mlops train --data FILE`), or {HINT}.")
    if model is None:
        if len(names) == 1:
            return names[0]
        raise CliError(f"{_where(block_name, uri)} has {len(names)} models ({', '.join(names)}): "
                       "pass --model NAME.")
    if model not in names:
        raise CliError(f"no registered model {model!r} in {_where(block_name, uri)}; registered: "
                       f"{', '.join(names)}. Pass --model with one of these, or {HINT}.")
    return model
