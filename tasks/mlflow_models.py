"""MLflow 3 LoggedModels: log a fitted sklearn pipeline as one, find it again, read its id from a URI.

A model is created through the client (``create_logged_model``), its files uploaded to it
(``log_model_artifacts``) and finalized ``READY``; the registry version's source is then
``models:/<model_id>`` (tasks/mlflow_registry.py). The model's evaluation metrics are linked to it
by ``tasks.mlflow_tracking.log_evaluation(..., model_id=...)``, with the training dataset's name and
digest, so the MLflow UI's model page shows its metrics and dataset.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.mlflow_server import MlflowServer
from tasks.exceptions import TrackingServerError
from tasks.logs import run_logger

#: ``<run id>/<name>`` on a LoggedModel: one LoggedModel per run and name, also across retries.
TAG_MODEL_KEY = "mlops.model_key"
#: The LoggedModel id on a registered version (MLflow's SQL registry does not keep a version's model_id).
TAG_MODEL_ID = "mlops.model_id"
_RERUN = " (a rerun reuses the LoggedModel of the same run, tag mlops.model_key)"


def _wrap(operation: str, mlflow_server: MlflowServer, exc: Exception, rerun: str = "") -> TrackingServerError:
    """Return the one error of a failed MLflow tracking call (also used by tasks/mlflow_tracking.py)."""
    return TrackingServerError(
        f"MLflow {operation} at {mlflow_server.tracking_uri} failed: {type(exc).__name__}: {exc}. Check that the "
        "tracking server is running and reachable (e.g. `mlflow server --host 127.0.0.1 --port 5000`) or fix the "
        f"MLflow block's tracking_uri, then rerun{rerun}; nothing was registered."
    )


def pinned_requirements() -> list[str]:
    """Return explicit pip requirements of an sklearn model (skips ~5 s of inference)."""
    from importlib import metadata

    return [f"{pkg}=={metadata.version(pkg)}"
            for pkg in ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "skops", "cloudpickle")]


def logged_model_id(uri: str | None) -> str | None:
    """Return the LoggedModel id of a ``models:/<model_id>`` URI, or None for any other URI.

    Examples:
        >>> logged_model_id("models:/m-0123abcd")
        'm-0123abcd'
        >>> logged_model_id("mlflow-artifacts:/1/abc/artifacts/model") is None
        True
    """
    if not uri or not uri.startswith("models:/"):
        return None
    rest = uri.removeprefix("models:/").strip("/")
    # As MLflow parses it: models:/<name>/<version> and models:/<name>@<alias> are registry URIs, a single
    # segment is a LoggedModel id.
    return rest if rest and "/" not in rest and "@" not in rest else None


def _find_logged_model(client: Any, experiment_id: str, key: str) -> Any | None:
    """Return the LoggedModel tagged with ``key`` (made by an earlier attempt of the same task), or None."""
    found = client.search_logged_models([experiment_id], filter_string=f"tags.`{TAG_MODEL_KEY}` = '{key}'",
                                        max_results=10)
    # READY first (a finished earlier attempt), then the oldest (the one the first attempt created).
    return min(found, key=lambda m: (str(m.status) != "READY", m.creation_timestamp), default=None)


def _log_chosen_params(client: Any, run: Any, params: dict[str, Any]) -> None:
    """Log the chosen hyperparameters as params of the run (MLflow params never change: clashes get ``best.``)."""
    from mlflow.entities import Param

    have = run.data.params
    todo = {}
    for key, value in params.items():
        text = str(value)[:6000]
        name = key if have.get(key, text) == text else f"best.{key}"
        if have.get(name) != text:
            todo[name] = text
    if todo:
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in todo.items()])


@task(name="log-sklearn-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def log_sklearn_model(mlflow_server: MlflowServer, run_id: str, model_path: str, sample_file: str,
                      features: list[str], artifact_path: str = "model",
                      params: dict[str, Any] | None = None) -> str:
    """Log the fitted pipeline as an MLflow 3 LoggedModel of the run and return ``models:/<model_id>``.

    The model is created through the client (``create_logged_model``), its files uploaded to it
    (``log_model_artifacts``), recorded as an output of the run and finalized ``READY``. The files
    are those of ``mlflow.sklearn.save_model``: signature (from a sample of the data), input example,
    explicit pip requirements (no ~5 s inference), the skops trusted types of the fitted objects (tree
    models need them) and ``metadata.features``. Idempotent: a retry finds the LoggedModel of the same
    run and ``artifact_path`` by its ``mlops.model_key`` tag instead of creating a second one.

    Args:
        mlflow_server: The MLflow block.
        run_id: The run (the model's source run).
        model_path: The fitted pipeline (joblib).
        sample_file: Data to take the signature and input example from.
        features: Feature columns.
        artifact_path: Name of the LoggedModel.
        params: The chosen hyperparameters: the LoggedModel's params, and params of the run (so runs compare on
            them in the MLflow UI; a name the run already has with another value is logged as ``best.<name>``).

    Returns:
        The model URI ``models:/<model_id>`` (the registry version source).

    Raises:
        TrackingServerError: If the server fails.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def track(run_id: str, model: str, test: str) -> str:
        ...     return log_sklearn_model(MlflowServer.embedded(), run_id, model, test, ["tenure_months"])
    """
    import mlflow.sklearn
    import skops.io
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import infer_signature

    from tasks.sample_data import read_frame

    client = mlflow_server.get_client()
    key = f"{run_id}/{artifact_path}"
    try:
        run = client.get_run(run_id)
        experiment_id = run.info.experiment_id
        logged = _find_logged_model(client, experiment_id, key)
        _log_chosen_params(client, run, params or {})
    except Exception as exc:
        raise _wrap("looking up the model of run " + run_id, mlflow_server, exc, _RERUN) from exc
    if logged is not None and str(logged.status) == "READY":
        run_logger().info("Model of run %s already logged as %s", run_id, logged.model_id)
        return f"models:/{logged.model_id}"
    from tasks.model_evaluation import load_model

    model = load_model(model_path)
    sample = read_frame(sample_file)[features].head(200)
    with warnings.catch_warnings():  # the hint on integer columns; the serving schema handles them
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(sample, model.predict(sample))
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)  # "pip version" noise in uv venvs
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        local = Path(tmp) / artifact_path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mlflow.sklearn.save_model(model, str(local), signature=signature, input_example=sample.head(3),
                                      pip_requirements=pinned_requirements(), skops_trusted_types=trusted,
                                      metadata={"features": json.dumps(features)})
        try:
            if logged is None:
                logged = client.create_logged_model(
                    experiment_id, name=artifact_path, source_run_id=run_id, model_type="sklearn",
                    params={k: str(v)[:6000] for k, v in (params or {}).items()},
                    tags={TAG_MODEL_KEY: key, "mlops.estimator": type(model).__name__})
            # Same files on a retry: uploading again overwrites them.
            client.log_model_artifacts(logged.model_id, str(local))
            outputs = run.outputs.model_outputs if run.outputs else []
            if logged.model_id not in {o.model_id for o in outputs}:
                client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, 0)])
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        except Exception as exc:
            raise _wrap("logging the model of run " + run_id, mlflow_server, exc, _RERUN) from exc
    run_logger().info("Logged model of run %s as %s at %s", run_id, logged.model_id, logged.artifact_location)
    return f"models:/{logged.model_id}"


def register_logged_model(mlflow_server: MlflowServer, client: Any, name: str, model_id: str, run_id: str,
                           tags: dict[str, str], description: str | None) -> Any:
    """Return the version of ``name`` made from LoggedModel ``model_id``, registering it if there is none.

    The version's source is ``models:/<model_id>`` (its files are the LoggedModel's), it carries the tag
    ``mlops.model_id`` and is added to the LoggedModel's ``mlflow.modelVersions`` tag, as
    ``mlflow.register_model`` does. Called by ``tasks.mlflow_registry.register_model_version`` with its client.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    existing = client.search_model_versions(f"name = '{name}' and tags.`{TAG_MODEL_ID}` = '{model_id}'")
    if existing:  # a retry after a lost response, or a rerun: the same LoggedModel is one version
        version = min(existing, key=lambda v: int(v.version))
    else:
        source = f"models:/{model_id}"
        if not (mlflow_server.registry_uri or mlflow_server.tracking_uri).startswith(("http://", "https://")):
            # MLflow's in-process SQL registry resolves models:/<model_id> through the process-global tracking
            # URI (a TODO in mlflow/store/model_registry/sqlalchemy_store.py create_model_version), not this
            # block's store: give it the LoggedModel's artifact location (the same files); the version's
            # mlops.model_id tag and the LoggedModel's mlflow.modelVersions tag keep the link.
            source = client.get_logged_model(model_id).artifact_location
        # await_creation_for=0: both registries answer READY at once; waiting only logs "Waiting up to 300 s".
        version = client.create_model_version(name, source, run_id=run_id, model_id=model_id,
                                              description=description, await_creation_for=0,
                                              tags={**{k: str(v)[:5000] for k, v in tags.items()},
                                                    TAG_MODEL_ID: model_id})
    # What mlflow.register_model records, so the UI lists the versions on the model's page. The mlflow server
    # adds it itself (version as a number) when given model_id; the in-process SQL store does not.
    listed = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    if not any(e.get("name") == name and str(e.get("version")) == str(version.version) for e in listed):
        entry = {"name": name, "version": str(version.version)}
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*listed, entry])})
    return version
