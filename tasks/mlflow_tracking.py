"""MLflow tracking through an ``MlflowClient``, never the process-global fluent state.

One parent run per pipeline run, one nested run per trial, the dataset as a run input,
the model as an MLflow 3 LoggedModel (signature, input example, explicit pip requirements),
with the test metrics linked to it and to the training dataset. The model logging lives in
tasks/mlflow_models.py; ``log_sklearn_model`` and ``pinned_requirements`` stay importable from here.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.mlflow_server import MlflowServer
from tasks import lineage as L
from tasks.logs import run_logger
from tasks.mlflow_models import (  # noqa: F401 - log_sklearn_model, pinned_requirements: importable from here
    _wrap,
    log_sklearn_model,
    logged_model_id,
    pinned_requirements,
)
from tasks.model_evaluation import Evaluation
from tasks.sklearn_training import TrialResult

#: ``<parent run id>/<trial index>``: one nested run per trial, also across retries.
TAG_TRIAL_KEY = "mlops.trial_key"


@task(name="check-tracking-server", cache_policy=NO_CACHE)
def check_tracking_server(mlflow_server: MlflowServer, attempts: int = 2, backoff_s: float = 1.0) -> str:
    """Reach the tracking server (bounded retries) and return the experiment id, creating it if needed.

    Run first in a pipeline, so an unreachable server fails before anything is registered.

    Args:
        mlflow_server: The MLflow block.
        attempts: Attempts before giving up (each one also has MLflow's own bounded HTTP retries).
        backoff_s: Wait between attempts, doubled each time.

    Returns:
        The experiment id.

    Raises:
        TrackingServerError: If the server cannot be reached after ``attempts`` attempts.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def ping() -> str:
        ...     return check_tracking_server(MlflowServer.load("local-mlflow"))
    """
    logger = run_logger()
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            client = mlflow_server.get_client()
            experiment = client.get_experiment_by_name(mlflow_server.experiment_name)
            if experiment is not None:
                return experiment.experiment_id
            return client.create_experiment(mlflow_server.experiment_name,
                                            artifact_location=mlflow_server.artifact_location)
        except Exception as exc:  # MlflowException, requests errors, sqlalchemy errors
            last = exc
            logger.warning("MLflow at %s not reachable (attempt %d/%d): %s", mlflow_server.tracking_uri, attempt,
                           attempts, str(exc)[:300])
            if attempt < attempts:
                time.sleep(backoff_s * 2 ** (attempt - 1))
    raise _wrap(f"health check ({attempts} attempts)", mlflow_server, last or RuntimeError("unknown"))


@task(name="start-pipeline-run", cache_policy=NO_CACHE)
def start_pipeline_run(mlflow_server: MlflowServer, experiment_id: str, run_name: str, tags: dict[str, str],
                       params: dict[str, Any]) -> str:
    """Create the parent MLflow run of one pipeline run, with lineage tags and parameters.

    Args:
        mlflow_server: The MLflow block.
        experiment_id: Experiment to log to.
        run_name: Run name.
        tags: Lineage tags.
        params: Pipeline parameters (logged as MLflow params).

    Returns:
        The run id.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def track(experiment_id: str) -> str:
        ...     return start_pipeline_run(MlflowServer.embedded(), experiment_id, "nightly", {}, {"C": 1.0})
    """
    from mlflow.entities import Param

    from tasks.mlflow_pages import NOTE_TAG, run_note

    client = mlflow_server.get_client()
    tags = {NOTE_TAG: run_note(f"training {tags.get(L.TAG_MODEL_NAME) or run_name}: running", tags), **tags}
    try:
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    except Exception as exc:
        raise _wrap("create run", mlflow_server, exc) from exc
    return run.info.run_id


@task(name="log-trial-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def log_trial_run(mlflow_server: MlflowServer, experiment_id: str, parent_run_id: str, trial: TrialResult,
                  estimator: str) -> str:
    """Log one trial as a nested run of the pipeline run.

    Args:
        mlflow_server: The MLflow block.
        experiment_id: Experiment id.
        parent_run_id: The pipeline's parent run.
        trial: The trial result.
        estimator: Estimator dotted path.

    Returns:
        The nested run id.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def track(parent: str, trials: list[TrialResult]) -> list[str]:
        ...     return log_trial_run.map(MlflowServer.embedded(), "1", parent, trials, "LogisticRegression").result()
    """
    from mlflow.entities import Metric, Param

    client = mlflow_server.get_client()
    key = f"{parent_run_id}/{trial.trial}"
    try:
        # Keyed, so a retry after a lost response reuses the run instead of creating a second one.
        found = client.search_runs([experiment_id], max_results=1, filter_string=(
            f"tags.`{TAG_TRIAL_KEY}` = '{key}' and tags.`mlflow.parentRunId` = '{parent_run_id}'"))
        run = found[0] if found else client.create_run(
            experiment_id, run_name=f"trial-{trial.trial}",
            tags={"mlflow.parentRunId": parent_run_id, "mlops.estimator": estimator, TAG_TRIAL_KEY: key,
                  **_prefect_tags(client.get_run(parent_run_id).data.tags, trial)})
        if run.info.status == "FINISHED":
            return run.info.run_id
        now = int(time.time() * 1000)
        present = set(client.get_run(run.info.run_id).data.metrics) if found else set()
        metrics = [Metric(f"valid_{k}", v, now, 0) for k, v in trial.metrics.items()]
        metrics += [Metric("fit_seconds", trial.fit_seconds, now, 0)]
        client.log_batch(run.info.run_id, metrics=[m for m in metrics if m.key not in present],
                         params=[Param(k, str(v)[:6000]) for k, v in trial.params.items()])  # same values: no-op
        client.set_terminated(run.info.run_id, "FINISHED")
    except Exception as exc:
        raise _wrap(f"log trial {trial.trial}", mlflow_server, exc) from exc
    return run.info.run_id


def _prefect_tags(parent: dict[str, str], trial: TrialResult) -> dict[str, str]:
    """Return the parent run's Prefect links (flow run, its UI page, deployment) and a note for a trial run."""
    from tasks.mlflow_pages import NOTE_TAG, prefect_links

    keep = {k: v for k, v in parent.items() if k.startswith("mlops.prefect.")}
    return {**keep, NOTE_TAG: f"Trial {trial.trial} of the tuning: `{trial.params}`.\n\n{prefect_links(parent)}."}


@task(name="log-dataset-input", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def log_dataset_input(mlflow_server: MlflowServer, run_id: str, dataset_file: str, source: str, name: str,
                      target: str, context: str = "training") -> str:
    """Log the training dataset as an input of the run (name, digest, schema, source).

    Args:
        mlflow_server: The MLflow block.
        run_id: The run.
        dataset_file: Local file with the exact bytes that were trained on.
        source: Where the data can be fetched again (``<repo>/<path>@<rev>``).
        name: Dataset name.
        target: Target column.
        context: Input context tag.

    Returns:
        The dataset digest.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def track(run_id: str, path: str) -> str:
        ...     return log_dataset_input(MlflowServer.embedded(), run_id, path, "repo/data.parquet@abc", "data", "y")
    """
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    from tasks.sample_data import read_frame

    with warnings.catch_warnings():  # "source can be interpreted in multiple ways": it is a local path
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(read_frame(dataset_file), source=source, name=name, targets=target)
        entity = dataset._to_mlflow_entity()
    mlflow_server.get_client().log_inputs(
        run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])
    return entity.digest


@task(name="log-evaluation", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def log_evaluation(mlflow_server: MlflowServer, run_id: str, evaluation: Evaluation, prefix: str = "test_",
                   model_id: str | None = None, dataset_name: str | None = None,
                   dataset_digest: str | None = None) -> None:
    """Log test metrics, per-slice metrics, fairness figures and plots to a run.

    With ``model_id`` the metrics are also linked to that LoggedModel, and with ``dataset_name``
    and ``dataset_digest`` to that dataset input of the run (MLflow 3 shows both on the model's page).

    Args:
        mlflow_server: The MLflow block.
        run_id: The run.
        evaluation: The evaluation.
        prefix: Prefix of the metric names.
        model_id: LoggedModel the metrics describe (``models:/<model_id>`` also accepted).
        dataset_name: Name of the run's dataset input the model was trained and evaluated on.
        dataset_digest: Its digest (as returned by :func:`log_dataset_input`).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def track(run_id: str, evaluation: Evaluation) -> None:
        ...     log_evaluation(MlflowServer.embedded(), run_id, evaluation)
    """
    from mlflow.entities import Metric

    client = mlflow_server.get_client()
    # A retry must not append a second point: metrics already on the run are skipped (step 0, one point each).
    present = set(client.get_run(run_id).data.metrics)
    now = int(time.time() * 1000)
    link = {"model_id": logged_model_id(model_id) or model_id, "dataset_name": dataset_name,
            "dataset_digest": dataset_digest}
    metrics = [Metric(f"{prefix}{k}", v, now, 0, **link) for k, v in evaluation.metrics.items()]
    for column, table in evaluation.slice_metrics.items():
        for value, row in table.items():
            metrics += [Metric(f"slice.{column}.{value}.{k}", v, now, 0, **link) for k, v in row.items()]
        metrics.append(Metric(f"slice_gap.{column}", evaluation.slice_gaps.get(column, 0.0), now, 0, **link))
    metrics += [Metric(f"baseline_{k}", v, now, 0, **link) for k, v in (evaluation.baseline or {}).items()]
    for key in ("disparity", "demographic_parity_difference", "equal_opportunity_difference"):
        if key in evaluation.fairness:
            metrics.append(Metric(f"fairness.{key}", float(evaluation.fairness[key]), now, 0, **link))
    metrics = [m for m in metrics if m.key not in present]
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start:start + 900])
    client.log_dict(run_id, evaluation_document(evaluation), "evaluation/evaluation.json")
    for plot in evaluation.plots:
        client.log_artifact(run_id, plot, "plots")


def evaluation_document(evaluation: Evaluation) -> dict[str, Any]:
    """Return ``evaluation.json``: plots as artifact paths of the run; absent sections say where they are, or why."""
    doc = evaluation.model_dump(mode="json", exclude={"plot_data"})
    doc["plots"] = [f"plots/{Path(p).name}" for p in evaluation.plots]
    see = {"gate": "the version's tags mlops.gate.verdict / mlops.gate.reasons / mlops.gate.compared"}
    if evaluation.slice_metrics:
        see["slices"] = "also run metrics slice.<column>.<value>.<metric> and slice_gap.<column>"
    else:
        del doc["slice_metrics"], doc["slice_gaps"]
        see["slices"] = "not computed: the promotion policy names no slice columns present in the test data"
    if evaluation.fairness:
        see["fairness"] = "also run metrics fairness.*"
    else:
        del doc["fairness"]
        see["fairness"] = "not computed: the promotion policy names no sensitive attribute present in the test data"
    if not doc.get("importance"):
        doc.pop("importance", None)
    doc["see"] = see
    return doc


@task(name="finish-pipeline-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def finish_pipeline_run(mlflow_server: MlflowServer, run_id: str, status: str = "FINISHED",
                        tags: dict[str, str] | None = None) -> None:
    """Set final tags and end the run.

    Args:
        mlflow_server: The MLflow block.
        run_id: The run.
        status: ``FINISHED``, ``FAILED`` or ``KILLED``.
        tags: Tags to set before ending (e.g. the gate verdict).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def close(run_id: str) -> None:
        ...     finish_pipeline_run(MlflowServer.embedded(), run_id, tags={"mlops.gate.verdict": "promoted"})
    """
    from mlflow.entities import RunTag

    client = mlflow_server.get_client()
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
    client.set_terminated(run_id, status)


def run_url(mlflow_server: MlflowServer, experiment_id: str, run_id: str) -> str:
    """Return the MLflow UI link of a run (or its store location for an embedded store)."""
    base = mlflow_server.ui_url()
    if base:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{mlflow_server.tracking_uri} (run {run_id}; `mlflow ui --backend-store-uri {mlflow_server.tracking_uri}`)"


@task(name="log-report-files", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def log_report_files(mlflow_server: MlflowServer, run_id: str, paths: list[str], artifact_dir: str) -> list[str]:
    """Attach report files (e.g. Evidently HTML and JSON) to a run as artifacts.

    Args:
        mlflow_server: The MLflow block.
        run_id: The run (e.g. the champion's training run).
        paths: Local files.
        artifact_dir: Artifact folder in the run.

    Returns:
        The artifact paths written.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def attach(run_id: str) -> list[str]:
        ...     return log_report_files(MlflowServer.embedded(), run_id, ["/tmp/drift.html"], "monitoring/today")
    """
    client = mlflow_server.get_client()
    written = []
    for path in paths:
        if path and Path(path).is_file():
            client.log_artifact(run_id, path, artifact_dir)
            written.append(f"{artifact_dir}/{Path(path).name}")
    return written
