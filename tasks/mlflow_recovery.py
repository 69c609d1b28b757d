"""Close the books of training runs that were killed mid-way (SIGKILL, OOM, lost worker).

A killed process leaves its MLflow parent run ``RUNNING`` and its Prefect flow run
``Running`` forever. When the next training run of the same model starts, it looks for
MLflow parent runs of that model still ``RUNNING`` and decides whether their process is
gone: the Prefect flow run (``mlops.prefect.flow_run_id``) is in a final state, or it
ran on this host and its process (``mlops.process.*`` tags) no longer exists. Gone ->
the MLflow run and its unfinished trial runs become ``FAILED`` with the reason in
``mlops.interrupted_reason``, and the Prefect flow run becomes ``Crashed``. A run whose
fate cannot be told (another host, Prefect says running) is left alone and logged: a
live run is never marked dead.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.mlflow_server import MlflowServer
from tasks import lineage as L
from tasks.exceptions import TrackingServerError
from tasks.logs import run_logger
from tasks.mlflow_locks import flow_run_state, process_alive

TAG_INTERRUPTED = "mlops.interrupted_reason"


def _crash_prefect_run(flow_run_id: str, message: str) -> bool:
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(uuid.UUID(flow_run_id), Crashed(message=message), force=True)
        return True
    except Exception as exc:
        run_logger().warning("Could not mark Prefect flow run %s Crashed: %s", flow_run_id, exc)
        return False


def interruption_reason(tags: dict[str, str], current_flow_run_id: str | None) -> str | None:
    """Return why a RUNNING run's process is gone, or None if it may be alive (or is this run)."""
    flow_run_id = tags.get(L.TAG_FLOW_RUN_ID) or ""
    if flow_run_id and flow_run_id == current_flow_run_id:
        return None
    state = flow_run_state(flow_run_id)
    if state is not None and state.is_final():
        return f"Prefect flow run {flow_run_id} ended {state.type.value} while the MLflow run was still RUNNING"
    alive = process_alive(tags.get(L.TAG_PROCESS_HOST), tags.get(L.TAG_PROCESS_PID), tags.get(L.TAG_PROCESS_STARTED))
    if alive is False:
        return (f"its process (pid {tags.get(L.TAG_PROCESS_PID)} on {tags.get(L.TAG_PROCESS_HOST)}) is gone "
                f"while Prefect flow run {flow_run_id or '?'} was {state.type.value if state else 'unknown'}")
    return None


@task(name="close-interrupted-runs", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def close_interrupted_runs(mlflow_server: MlflowServer, experiment_id: str, model_name: str,
                           current_flow_run_id: str | None = None) -> list[str]:
    """Mark the killed training runs of a model FAILED in MLflow and Crashed in Prefect.

    Idempotent (a run already closed is not RUNNING any more), so it may be retried.

    Args:
        mlflow_server: The MLflow block.
        experiment_id: Experiment of the pipeline runs.
        model_name: Only runs of this model (tag ``mlops.model_name``).
        current_flow_run_id: This flow run (never touched).

    Returns:
        The MLflow run ids that were closed.

    Raises:
        TrackingServerError: If MLflow cannot be searched.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def tidy(experiment_id: str) -> list[str]:
        ...     return close_interrupted_runs(MlflowServer.embedded(), experiment_id, "churn-classifier")
    """
    from mlflow.entities import RunTag

    logger = run_logger()
    client = mlflow_server.get_client()
    try:
        running = client.search_runs([experiment_id], max_results=200, filter_string=(
            f"attributes.status = 'RUNNING' and tags.`{L.TAG_MODEL_NAME}` = '{model_name}'"))
    except Exception as exc:
        raise TrackingServerError(f"Searching unfinished runs of {model_name!r} at {mlflow_server.tracking_uri} "
                                  f"failed: {exc}. Check that the tracking server is reachable, then rerun.") from exc
    closed = []
    for run in running:
        if run.data.tags.get("mlflow.parentRunId"):
            continue
        reason = interruption_reason(run.data.tags, current_flow_run_id)
        if reason is None:
            logger.info("MLflow run %s of %s is RUNNING and may be alive; left alone", run.info.run_id, model_name)
            continue
        reason = f"interrupted: {reason}; closed by flow run {current_flow_run_id or '?'}"
        children = client.search_runs([experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and attributes.status = 'RUNNING'"))
        for child in [*children, run]:
            client.log_batch(child.info.run_id, tags=[RunTag(TAG_INTERRUPTED, reason[:5000])])
            client.set_terminated(child.info.run_id, "FAILED")
        flow_run_id = run.data.tags.get(L.TAG_FLOW_RUN_ID) or ""
        state = flow_run_state(flow_run_id)
        if state is not None and not state.is_final():
            _crash_prefect_run(flow_run_id, f"Process gone; MLflow run {run.info.run_id} closed as FAILED: {reason}")
        logger.warning("Closed interrupted MLflow run %s of %s: %s", run.info.run_id, model_name, reason)
        closed.append(run.info.run_id)
    return closed
