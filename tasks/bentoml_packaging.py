"""BentoML packaging: a registry version -> a bento in the BentoML store (its container recipe: ``bentoml_container``).

``bentoml`` runs in subprocesses with ``BENTOML_HOME`` set from the :class:`BentoMLServing`
block, so no task touches ``os.environ`` and the Prefect worker never imports BentoML.
Bentos are built without locking packages against the index (``lock_packages: false``) and
are served from the current Python environment.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.bentoml_serving import BentoMLServing
from blocks.mlflow_server import MlflowServer
from tasks import lineage as L
from tasks.exceptions import PackagingError, RegistryError
from tasks.locks import file_lock
from tasks.logs import run_logger
from tasks.mlflow_registry import CHAMPION, ModelVersionInfo, alias_version

_HERE = Path(__file__).resolve().parent
#: The serving package (``tasks/_serving``): copied whole into every bento as ``mlops_serving/``.
SERVING_PACKAGE = _HERE / "_serving"
SERVING_PACKAGE_NAME = "mlops_serving"
SERVICE_ENTRY = "service:MlopsModelService"
#: Packages of the model's stack written into the bento's requirements (installed versions).
STACK_PACKAGES = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "pyarrow", "skops", "cloudpickle", "orjson",
                  "httptools", "uvloop")
_URI = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class BentoInfo(BaseModel):
    """A bento in the local BentoML store, built from one registered model version."""

    tag: str
    model_tag: str
    model_name: str
    model_version: str
    run_id: str | None
    data_rev: str | None
    path: str
    labels: dict[str, str]
    features: list[str]
    input_example: list[dict[str, Any]]
    built: bool
    seconds: float
    task_type: str | None = None
    classes: list[Any] | None = None
    positive_label: Any = None
    time_column: str | None = None
    passthrough_columns: list[dict[str, str]] = []


class BrokenModelArtifactError(PackagingError):
    """A registered version's model files cannot be read (corrupted or missing ``MLmodel``, signature, example).

    The version itself is broken, not the infrastructure: the deployment moves ``champion`` back
    to the version that serves and records this reason on the broken version.
    """


def parse_model_uri(model: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/name@alias`` / ``models:/name/3`` / ``name`` into ``(name, alias, version)``.

    Examples:
        >>> parse_model_uri("models:/churn@champion")
        ('churn', 'champion', None)
        >>> parse_model_uri("models:/churn/3")
        ('churn', None, '3')
    """
    match = _URI.match(model)
    if match:
        return match.group("name"), match.group("alias"), match.group("version")
    if model.startswith("models:/"):
        raise RegistryError(f"Cannot read model URI {model!r}: use models:/<name>@<alias> or models:/<name>/<version>.")
    return model, None, None


def bentoml_name(model_name: str) -> str:
    """Return a valid BentoML tag name for a registered model name (lowercase, ``a-z0-9_.-``)."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", model_name.lower()).strip("-_.")
    return name or "model"


@task(name="resolve-model-version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def resolve_model_version(mlflow_server: MlflowServer, model: str, alias: str | None = CHAMPION,
                          version: str | None = None) -> ModelVersionInfo:
    """Find the registered version to package: an explicit version, else the version an alias points to.

    Args:
        mlflow_server: The MLflow block.
        model: Registered model name, or a URI ``models:/name@alias`` / ``models:/name/3``.
        alias: Alias to follow when no version is given (``champion``).
        version: Explicit version (wins over the alias).

    Returns:
        The version.

    Raises:
        RegistryError: If the model, the version or the alias does not exist.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def which() -> str:
        ...     return resolve_model_version(MlflowServer.embedded(), "models:/churn-classifier@champion").version
    """
    from tasks.mlflow_registry import version_info, version_over_http

    name, uri_alias, uri_version = parse_model_uri(model)
    version = version or uri_version
    alias = uri_alias or alias
    found = version_over_http(mlflow_server, name, version, alias)  # no MLflow import when it answers
    if found is not None:
        return found
    from mlflow.exceptions import MlflowException

    if version is not None:
        try:
            return version_info(mlflow_server.get_client().get_model_version(name, str(version)))
        except MlflowException as exc:
            raise RegistryError(f"Model {name!r} has no version {version} in the registry at "
                                f"{mlflow_server.tracking_uri}: {exc}") from exc
    if not alias:
        raise RegistryError(f"Say which version of {name!r} to package: pass a version or an alias.")
    found = alias_version(mlflow_server, name, alias)
    if found is None:
        raise RegistryError(f"Model {name!r} has no alias {alias!r} at {mlflow_server.tracking_uri}: train and "
                            "promote a version first (continuous-training flow), or pass a version.")
    return found


def read_mlflow_signature(model_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the input columns of an MLflow model's signature and its input example as records.

    Args:
        model_dir: Local MLflow model folder.

    Returns:
        ``(columns, example_records)``; columns are ``{"name", "type", "required"}`` dicts.

    Raises:
        BrokenModelArtifactError: If ``MLmodel`` is unreadable or not an MLflow model, or the model
            has no signature with named columns.
    """
    import yaml

    mlmodel = Path(model_dir) / "MLmodel"
    try:
        meta = yaml.safe_load(mlmodel.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise BrokenModelArtifactError(f"The model's MLmodel file {mlmodel} cannot be read ({type(exc).__name__}: "
                                       f"{detail}).") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("flavors"), dict):
        raise BrokenModelArtifactError(f"The model's MLmodel file {mlmodel} is not an MLflow model description "
                                       f"(no 'flavors' mapping; it starts with {mlmodel.read_text()[:80]!r}).")
    try:
        return _signature_and_example(meta, Path(model_dir))
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise BrokenModelArtifactError(f"The model's signature or input example in {model_dir} cannot be read: "
                                       f"{type(exc).__name__}: {str(exc)[:300]}") from exc


def _signature_and_example(meta: dict[str, Any], model_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    inputs = (meta.get("signature") or {}).get("inputs")
    if not inputs:
        raise BrokenModelArtifactError(f"The MLflow model at {model_dir} has no signature: log it with one "
                                       "(mlflow.models.infer_signature) so the service can validate requests.")
    columns = json.loads(inputs) if isinstance(inputs, str) else inputs
    if any("name" not in c for c in columns):
        raise BrokenModelArtifactError(f"The MLflow model at {model_dir} takes unnamed tensors; the service needs "
                                       "named columns (log the model with a DataFrame signature).")
    columns = [{"name": c["name"], "type": c.get("type", "string"), "required": c.get("required", True)}
               for c in columns]
    example: list[dict[str, Any]] = []
    info = meta.get("saved_input_example_info") or {}
    path = model_dir / str(info.get("artifact_path", "input_example.json"))
    if path.is_file():
        raw = json.loads(path.read_text())
        if isinstance(raw, dict) and "columns" in raw and "data" in raw:
            example = [dict(zip(raw["columns"], row, strict=False)) for row in raw["data"]]
        elif isinstance(raw, list) and all(isinstance(r, dict) for r in raw):
            example = raw
        elif isinstance(raw, dict) and all(not isinstance(v, list | dict) for v in raw.values()):
            example = [raw]
    names = [c["name"] for c in columns]
    example = [{k: r.get(k) for k in names} for r in example[:3]]
    return columns, example


def _json_tag(tags: dict[str, str], key: str, default: Any) -> Any:
    raw = tags.get(key)
    if raw in (None, ""):
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a plain string written without JSON quoting (e.g. a label "yes")


def serving_config(version: ModelVersionInfo, features: list[str]) -> dict[str, Any]:
    """Return the task keys of ``mlops_bento.json`` from the version's lineage tags (shared contract 4).

    Defaults for versions registered before these tags existed: ``task_type`` None (the service
    then reads it from the model), no ``classes``, no ``positive_label``, no time column and no
    passthrough columns. The time column travels as a passthrough column of type ``datetime``
    (an ISO string): logged with the prediction, never given to the model.

    Examples:
        >>> v = ModelVersionInfo(name="m", version="1", run_id=None, source="", tags={
        ...     "mlops.task_type": "binary", "mlops.classes": '["no", "yes"]', "mlops.positive_label": '"yes"',
        ...     "mlops.time_column": "signup_date"})  # doctest: +SKIP
        >>> serving_config(v, ["age"])["passthrough_columns"]  # doctest: +SKIP
        [{'name': 'signup_date', 'type': 'datetime'}]
    """
    tags = version.tags or {}
    task_type = tags.get(L.TAG_TASK_TYPE) or None
    classes = _json_tag(tags, L.TAG_CLASSES, None)
    if task_type == "regression" or not isinstance(classes, list):
        classes = None
    positive = _json_tag(tags, L.TAG_POSITIVE_LABEL, None) if task_type in (None, "binary") else None
    time_column = tags.get(L.TAG_TIME_COLUMN) or None
    passthrough = [{"name": time_column, "type": "datetime"}] if time_column and time_column not in features else []
    return {"task_type": task_type, "classes": classes, "positive_label": positive, "time_column": time_column,
            "passthrough_columns": passthrough}


def _serving_sources() -> list[Path]:
    """Return the serving package's modules, in a stable order (they go into the bento and its version)."""
    return sorted(SERVING_PACKAGE.glob("*.py"))


def _installed_requirements(packages: tuple[str, ...]) -> list[str]:
    from importlib import metadata

    out = []
    for pkg in packages:
        try:
            out.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            continue
    return out


# The model goes into the store as ``bentoml.mlflow.import_model`` puts it (same model.yaml: module
# bentoml.mlflow, api v1, predict signature, mlflow context; the folder as ``mlflow_model``), without
# importing MLflow: ``import bentoml.mlflow`` imports it, 2-3.5 s of a 3.5-6 s build here (every
# promotion waits for a build). Measure: time ``python -c "import bentoml.mlflow"`` vs ``"import bentoml"``.
_BUILD_SCRIPT = r"""
import importlib.metadata, json, os, shutil, sys
import bentoml, yaml
from bentoml.models import ModelContext
spec = json.loads(sys.argv[1])
try:
    bentoml.models.get(spec["model_tag"])
except bentoml.exceptions.NotFound:
    with open(os.path.join(spec["model_dir"], "MLmodel")) as f:
        if "python_function" not in (yaml.safe_load(f) or {}).get("flavors", {}):
            sys.exit(f"MLflow model {spec['model_dir']} does not support the required python_function flavor")
    context = ModelContext(framework_name="mlflow",
                           framework_versions={"mlflow": importlib.metadata.version("mlflow")})
    with bentoml.models.create(spec["model_tag"], module="bentoml.mlflow", api_version="v1",
                               signatures={"predict": {"batchable": False}}, labels=spec["labels"],
                               metadata=spec["metadata"], context=context) as model:
        shutil.copytree(spec["model_dir"], model.path_of("mlflow_model"))
bento = bentoml.bentos.build_bentofile(spec["bentofile"], build_ctx=spec["build_ctx"], version=spec["version"])
print(json.dumps({"tag": str(bento.tag), "path": bento.path}))
"""


def run_bentoml(serving: BentoMLServing, args: list[str], what: str, timeout_s: float = 600) -> str:
    """Run a ``bentoml`` command in a subprocess with the block's ``BENTOML_HOME``; raise ``PackagingError``."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s,
                              env=serving.subprocess_env(), cwd=str(serving.home()))
    except subprocess.TimeoutExpired as exc:
        raise PackagingError(f"{what} took longer than {timeout_s:.0f}s and was stopped.") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-3000:]
        raise PackagingError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


@task(name="build-bento", cache_policy=NO_CACHE)
def build_bento(serving: BentoMLServing, version: ModelVersionInfo, model_dir: str) -> BentoInfo:
    """Import a registered MLflow model into the BentoML store and build its bento.

    The bento's service validates requests against the model's MLflow signature, scores
    with adaptive batching and logs every prediction; its labels carry the registry name,
    version, run id and DVC data rev. Idempotent: a bento of the same version and service
    code is reused. Packages are not locked against the index at build time.

    Args:
        serving: The BentoML serving block (store location, serving settings).
        version: The registered version.
        model_dir: Its local MLflow model folder (``download_model_version``).

    Returns:
        The bento's tag, store path, labels, features and input example.

    Raises:
        PackagingError: If the model has no usable signature or ``bentoml`` fails.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def package(v: ModelVersionInfo, folder: str) -> str:
        ...     return build_bento(BentoMLServing.embedded(), v, folder).tag
    """
    logger = run_logger()
    started = time.perf_counter()
    try:
        columns, example = read_mlflow_signature(model_dir)
    except BrokenModelArtifactError as exc:
        raise BrokenModelArtifactError(
            f"{version.name} version {version.version} cannot be deployed: its model files are broken. {exc} "
            f"The registered artifacts ({version.source}) are damaged or were not logged by MLflow: log and register "
            f"the model again from its training run (or retrain), or deploy another version "
            f"(deploy-model with version=<n>, or rollback-model).") from exc
    serving_cfg = serving_config(version, [c["name"] for c in columns])
    name = bentoml_name(version.name)
    run8 = (version.run_id or "norun")[:8]
    model_tag = f"{name}:v{version.version}-{run8}"
    labels = {"model_name": version.name, "model_version": str(version.version), "run_id": version.run_id or "",
              "data_rev": version.tags.get(L.TAG_DATA_REV, ""), "data_md5": version.tags.get(L.TAG_DATA_MD5, ""),
              "code_commit": version.tags.get(L.TAG_CODE_COMMIT, "")}
    bento_cfg = {"service_name": name, "model_tag": model_tag, "model_name": version.name,
                 "model_version": str(version.version), "run_id": version.run_id,
                 "data_rev": labels["data_rev"] or None, "columns": columns,
                 "input_example": example, **serving_cfg}
    digest = hashlib.sha256()
    for source in _serving_sources():
        digest.update(source.relative_to(SERVING_PACKAGE).as_posix().encode())
        digest.update(source.read_bytes())
    digest.update(json.dumps(bento_cfg, sort_keys=True, default=str).encode())
    bento_version = f"v{version.version}-{run8}-{digest.hexdigest()[:8]}"
    bento_tag = f"{name}:{bento_version}"
    bento_cfg["bento_tag"] = bento_tag
    home = serving.home()
    bento_path = home / "bentos" / name / bento_version
    features = [c["name"] for c in columns]
    same = {"model_tag": model_tag, "model_name": version.name, "model_version": str(version.version),
            "run_id": version.run_id, "data_rev": labels["data_rev"] or None, "labels": labels, "features": features,
            "input_example": example, **serving_cfg}
    # One build per bento at a time: a concurrent build of the same bento (the training flow pre-builds a
    # promoted version while deploy-model starts) finishes first, and this one then reuses it.
    with file_lock(home / "build" / f".{name}-{bento_version}.lock"):
        if (bento_path / "bento.yaml").is_file():
            logger.info("Bento %s is already in the store at %s; reusing it", bento_tag, home)
            return BentoInfo(tag=bento_tag, path=str(bento_path), built=False,
                             seconds=time.perf_counter() - started, **same)

        ctx = home / "build" / f"{name}-{bento_version}"
        if ctx.exists():
            shutil.rmtree(ctx)
        ctx.mkdir(parents=True)
        shutil.copytree(SERVING_PACKAGE, ctx / SERVING_PACKAGE_NAME,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (ctx / "service.py").write_text('"""Generated by prefect-mlops: serves one registered model version."""\n\n'
                                        f"from {SERVING_PACKAGE_NAME}.service import build_service\n\n"
                                        "MlopsModelService = build_service(__file__)\n")
        (ctx / "mlops_bento.json").write_text(json.dumps(bento_cfg, indent=2, default=str))
        packages = serving.python_packages if serving.python_packages is not None \
            else _installed_requirements(STACK_PACKAGES)
        bentofile = {"service": SERVICE_ENTRY, "name": name, "labels": labels,
                     "include": ["service.py", f"{SERVING_PACKAGE_NAME}/*.py", "mlops_bento.json"],
                     "python": {"packages": packages, "lock_packages": False},
                     "docker": {"python_version": f"{sys.version_info.major}.{sys.version_info.minor}"}}
        (ctx / "bentofile.yaml").write_text(json.dumps(bentofile, indent=2))
        spec = {"model_tag": model_tag, "model_dir": str(Path(model_dir).resolve()), "labels": labels,
                "metadata": {"registry_source": version.source, "features": json.dumps(features)},
                "bentofile": str(ctx / "bentofile.yaml"), "build_ctx": str(ctx), "version": bento_version}
        home.mkdir(parents=True, exist_ok=True)
        out = run_bentoml(serving, [sys.executable, "-c", _BUILD_SCRIPT, json.dumps(spec)],
                           f"Building the bento of {version.name} v{version.version}")
        result = json.loads(out.strip().splitlines()[-1])
        seconds = time.perf_counter() - started
        logger.info("Built bento %s from %s v%s in %.1fs", result["tag"], version.name, version.version, seconds)
        return BentoInfo(tag=result["tag"], path=result["path"], built=True, seconds=seconds, **same)
