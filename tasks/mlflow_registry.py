"""MLflow model registry: versions, reading aliases (``champion``, ``challenger``), downloading a version.

Moving an alias and its recorded history (who, when, from, to, why) live in
tasks/mlflow_alias_history.py.

Promotion progress is explicit on each version: tag ``mlops.promotion.state`` is
``pending`` (registered, not yet gated against the champion under the lock), ``done``
(promoted: the champion alias was moved) or ``rejected``. A run that dies in between
leaves ``pending``, which the next run with the same training key completes.

A version registered from an MLflow 3 LoggedModel (source ``models:/<model_id>``, from
tasks/mlflow_models.py) carries the tag ``mlops.model_id`` and is listed in the LoggedModel's
``mlflow.modelVersions`` tag, so the UI links both ways; registering the same LoggedModel
again returns its existing version. Older versions whose source is a run artifact URI work as before.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.mlflow_server import MlflowServer
from tasks import lineage as L
from tasks.exceptions import RegistryError
from tasks.logs import run_logger
from tasks.mlflow_models import TAG_MODEL_ID, logged_model_id, register_logged_model

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PROMOTION_STATE = "mlops.promotion.state"
PENDING, DONE, REJECTED = "pending", "done", "rejected"
#: Tags of the training process that stay on the run (``mlflow_recovery`` reads them there), not on the version page.
RUN_ONLY_TAGS = (L.TAG_PROCESS_HOST, L.TAG_PROCESS_PID, L.TAG_PROCESS_STARTED)
_ADVICE = "Check that the MLflow server is reachable (and the block's credentials), then rerun; nothing was promoted."


class ModelVersionInfo(BaseModel):
    """A registered model version (small and serialisable)."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    aliases: list[str]
    created_at: str
    model_id: str | None = None


def version_info(mv: Any) -> ModelVersionInfo:
    """Return the small serialisable view of an MLflow ``ModelVersion``."""
    created = dt.datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, tz=dt.UTC).isoformat()
    tags = dict(mv.tags or {})
    # MLflow's SQL registry does not store a version's model_id: read it from the source or our tag.
    model_id = getattr(mv, "model_id", None) or logged_model_id(mv.source) or tags.get(TAG_MODEL_ID)
    return ModelVersionInfo(name=mv.name, version=str(mv.version), run_id=mv.run_id, source=mv.source,
                            tags=tags, aliases=list(getattr(mv, "aliases", []) or []), created_at=created,
                            model_id=model_id)


def version_over_http(mlflow_server: MlflowServer, name: str, version: str | None = None,
                      alias: str | None = None) -> ModelVersionInfo | None:
    """Read one registered version (by number, else by alias) with one REST call, without importing MLflow.

    ``import mlflow`` takes 1-2 s here (3-6 s on a busy machine) and was the longest step of
    ``deploy-model`` before it adopts the standby backend; measure with
    ``benchmarks/bench_loop.py --verbose`` (``resolve-model-version``). Only a clear answer is
    used: for anything else (not an HTTP server, an error, a missing version or alias, an
    unexpected body) this returns None and the caller asks MLflow's client, which reports as before.

    Examples:
        >>> version_over_http(MlflowServer.embedded(), "churn-classifier", alias="champion") is None
        True
    """
    import httpx

    base = (mlflow_server.registry_uri or mlflow_server.tracking_uri).rstrip("/")
    if not base.startswith(("http://", "https://")) or not (version or alias):
        return None
    path, params = ("model-versions/get", {"name": name, "version": str(version)}) if version else \
        ("registered-models/alias", {"name": name, "alias": str(alias)})
    try:
        response = httpx.get(f"{base}/api/2.0/mlflow/{path}", params=params, timeout=mlflow_server.request_timeout_s,
                             headers=mlflow_server._scope_settings().headers)  # the block's credentials
        mv = response.json()["model_version"] if response.status_code == 200 else None
        if not isinstance(mv, dict) or mv.get("name") != name or not mv.get("version") or not mv.get("source"):
            return None
        tags = {t["key"]: t.get("value", "") for t in mv.get("tags") or []}
        created = dt.datetime.fromtimestamp(int(mv.get("creation_timestamp") or 0) / 1000, tz=dt.UTC).isoformat()
        return ModelVersionInfo(name=name, version=str(mv["version"]), run_id=mv.get("run_id"), source=mv["source"],
                                tags=tags, aliases=list(mv.get("aliases") or []), created_at=created,
                                model_id=mv.get("model_id") or logged_model_id(mv["source"]) or tags.get(TAG_MODEL_ID))
    except Exception:  # noqa: BLE001 - not a clear answer: MLflow's client decides
        return None


def _not_found(exc: Exception) -> bool:
    """Whether an MLflow error says the model / alias / version does not exist (and nothing else)."""
    code = getattr(exc, "error_code", "")
    message = str(exc).lower()
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    # A missing alias comes back as INVALID_PARAMETER_VALUE "Registered model alias x not found".
    return code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message


def alias_version(mlflow_server: MlflowServer, name: str, alias: str) -> ModelVersionInfo | None:
    """Return the version an alias points to, or None if the model or alias does not exist.

    Fails closed: any other failure (network, server, credentials) is a :class:`RegistryError`,
    never read as "no such alias".
    """
    from mlflow.exceptions import MlflowException

    try:
        return version_info(mlflow_server.get_client().get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise RegistryError(f"Reading alias {alias!r} of model {name!r} at {mlflow_server.tracking_uri} failed: "
                            f"{exc}. {_ADVICE}") from exc
    except Exception as exc:  # requests / urllib3 errors that MLflow did not wrap
        raise RegistryError(f"Reading alias {alias!r} of model {name!r} at {mlflow_server.tracking_uri} failed: "
                            f"{type(exc).__name__}: {exc}. {_ADVICE}") from exc


def promotion_state(version: ModelVersionInfo) -> str:
    """Return ``pending``, ``done`` or ``rejected`` for a version, also for versions made before the tag existed.

    An untagged version whose gate said ``promoted`` but that never held ``champion`` (no
    ``mlops.alias.champion.since`` tag) is ``pending``: its promotion never finished.
    """
    state = version.tags.get(TAG_PROMOTION_STATE)
    if state in (PENDING, DONE, REJECTED):
        return state
    if CHAMPION in version.aliases or f"mlops.alias.{CHAMPION}.since" in version.tags:
        return DONE
    verdict = version.tags.get("mlops.gate.verdict")
    if verdict == "promoted":
        return PENDING
    return REJECTED if verdict == "rejected" else PENDING


@task(name="get-alias-version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def get_alias_version(mlflow_server: MlflowServer, name: str, alias: str = CHAMPION) -> ModelVersionInfo | None:
    """Return the version an alias points to (``champion`` by default), or None.

    Args:
        mlflow_server: The MLflow block.
        name: Registered model name.
        alias: Alias.

    Returns:
        The version, or None when there is no such model or alias yet.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def serving(name: str) -> str | None:
        ...     champion = get_alias_version(MlflowServer.embedded(), name)
        ...     return champion.version if champion else None
    """
    return alias_version(mlflow_server, name, alias)


@task(name="find-version-by-tag", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def find_version_by_tag(mlflow_server: MlflowServer, name: str, key: str, value: str) -> ModelVersionInfo | None:
    """Return the newest version of a model whose tag ``key`` equals ``value``, or None.

    Args:
        mlflow_server: The MLflow block.
        name: Registered model name.
        key: Tag key (e.g. ``mlops.training_key``).
        value: Tag value.

    Returns:
        The newest matching version, or None.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def seen(name: str, key: str) -> bool:
        ...     return find_version_by_tag(MlflowServer.embedded(), name, "mlops.training_key", key) is not None
    """
    try:
        versions = mlflow_server.get_client().search_model_versions(f"name = '{name}' and tags.`{key}` = '{value}'")
    except Exception as exc:
        raise RegistryError(f"Searching versions of {name!r} with tag {key}={value} at {mlflow_server.tracking_uri} "
                            f"failed: {exc}. {_ADVICE}") from exc
    if not versions:
        return None
    return version_info(max(versions, key=lambda v: int(v.version)))


@task(name="register-model-version", cache_policy=NO_CACHE)
def register_model_version(mlflow_server: MlflowServer, name: str, source: str, run_id: str,
                           tags: dict[str, str], description: str | None = None) -> ModelVersionInfo:
    """Register a logged model as a new version, with its lineage tags.

    For a LoggedModel (``source`` ``models:/<model_id>``) the version points at it and the call is
    idempotent: a version of ``name`` already registered from that LoggedModel is returned instead of
    a second one. Not retried for other sources: a retry after a half-finished call could create a
    duplicate version.

    Args:
        mlflow_server: The MLflow block.
        name: Registered model name (created if missing).
        source: ``models:/<model_id>`` of a LoggedModel, or the artifact URI of a model logged to a run.
        run_id: The run that produced it.
        tags: Lineage tags for the version (the training process's ``mlops.process.*`` stay on the run).
        description: Version description.

    Returns:
        The new version.

    Raises:
        RegistryError: If registration fails.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def register(uri: str, run_id: str) -> str:
        ...     return register_model_version(MlflowServer.embedded(), "churn-classifier", uri, run_id, {}).version
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_server.get_client()
    tags = {k: v for k, v in tags.items() if k not in RUN_ONLY_TAGS}  # the run (run_id) keeps them
    try:
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if not _not_found(exc):
                raise
            client.create_registered_model(name, description="Registered by prefect-mlops continuous training.")
        model_id = logged_model_id(source)
        if model_id is None:
            version = client.create_model_version(name, source, run_id=run_id,
                                                  tags={k: str(v)[:5000] for k, v in tags.items()},
                                                  description=description)
        else:
            version = register_logged_model(mlflow_server, client, name, model_id, run_id, tags, description)
    except MlflowException as exc:
        raise RegistryError(f"Registering run {run_id} as a version of {name!r} failed: {exc}") from exc
    run_logger().info("Registered %s version %s from run %s (%s)", name, version.version, run_id, source)
    return version_info(version)


@task(name="tag-model-version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def tag_model_version(mlflow_server: MlflowServer, name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on a model version (idempotent).

    Args:
        mlflow_server: The MLflow block.
        name: Registered model name.
        version: Version.
        tags: Tags to set.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def note(version: str) -> None:
        ...     tag_model_version(MlflowServer.embedded(), "churn-classifier", version, {"reviewed": "yes"})
    """
    client = mlflow_server.get_client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])


@task(name="download-model-version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def download_model_version(mlflow_server: MlflowServer, version: ModelVersionInfo, dst_dir: str) -> str:
    """Download a registered version's MLflow model folder (cached by name and version).

    Args:
        mlflow_server: The MLflow block.
        version: The registered version.
        dst_dir: Parent folder for local copies.

    Returns:
        The local model folder.

    Raises:
        RegistryError: If the model cannot be downloaded.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def fetch(v: ModelVersionInfo) -> str:
        ...     return download_model_version(MlflowServer.embedded(), v, "/tmp/models")
    """
    target = Path(dst_dir) / f"{version.name}-v{version.version}"
    if (target / "MLmodel").is_file():
        return str(target)
    partial = target.with_name(f"{target.name}.part-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True, exist_ok=True)
    what = f"Downloading model {version.name!r} version {version.version} (run {version.run_id}) from {version.source}"
    try:
        uri = version.source
        if logged_model_id(uri):  # models:/<model_id>: the registry knows where the LoggedModel's files are
            uri = mlflow_server.get_client().get_model_version_download_uri(version.name, version.version)
        repo = mlflow_server.artifact_repository(uri)
        with mlflow_server.scope():
            repo.download_artifacts("", dst_path=str(partial))
    except Exception as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise RegistryError(f"{what} (registry {mlflow_server.tracking_uri}) failed: {type(exc).__name__}: {exc}. "
                            f"{_ADVICE}") from exc
    found = next(partial.rglob("MLmodel"), None)
    if found is None:
        shutil.rmtree(partial, ignore_errors=True)
        raise RegistryError(f"Model {version.name!r} version {version.version} at {version.source} has no MLmodel "
                            "file: the registered artifact is incomplete. Register a complete model or delete "
                            "that version, then rerun.")
    if not (target / "MLmodel").is_file():  # else another process (a pre-build, a deploy) finished it first
        shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover of an older layout
        try:
            found.parent.rename(target)  # complete copies only: a killed download never looks cached
        except OSError:
            if not (target / "MLmodel").is_file():  # not the concurrent copy arriving first: a real fault
                raise
    shutil.rmtree(partial, ignore_errors=True)
    return str(target)
