"""The ``rollback-model`` flow: the previous champion serves again, with the reason recorded."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel

from flows.common import DEFAULT_MODEL_NAME, load_mlflow
from tasks.events import MODEL_ROLLED_BACK, emit_model_event
from tasks.exceptions import RegistryError
from tasks.mlflow_alias_history import list_alias_history, rollback_target, set_model_alias
from tasks.mlflow_registry import CHAMPION, get_alias_version
from tasks.prefect_artifacts import publish_report


class RollbackSummary(BaseModel):
    """What a rollback did."""

    model_name: str
    from_version: str
    to_version: str
    reason: str
    at: str
    serving_url: str | None = None


@flow(name="rollback-model", log_prints=True)
def rollback_model(
    model_name: str = DEFAULT_MODEL_NAME,
    reason: str = "manual rollback",
    to_version: str | None = None,
    mlflow_block: str | None = None,
    serving_block: str | None = None,
    redeploy: bool = True,
) -> RollbackSummary:
    """Point ``champion`` back at the previous champion (or at ``to_version``), recording why.

    The previous champion is read from the recorded alias history: the version the
    current champion replaced.

    Args:
        model_name: Registered model name.
        reason: Why (recorded with the alias move and in the event).
        to_version: Version to restore; None restores the one the current champion replaced.
        mlflow_block: Name of a saved ``MlflowServer`` block (None: embedded SQLite).
        serving_block: Name of the saved ``BentoMLServing`` block of the endpoint (None: embedded).
        redeploy: If the endpoint serves this model, serve the restored champion's bento on it
            (``deploy-model`` as a subflow: the same smoke test and zero-downtime swap).

    Returns:
        A :class:`RollbackSummary`.

    Raises:
        RegistryError: If there is no champion, or no earlier champion to return to.

    Examples:
        >>> from flows.rollback_model import rollback_model
        >>> rollback_model(reason="v7 misbehaves on new traffic")  # doctest: +SKIP
        >>> rollback_model(to_version="3", reason="audit request")  # doctest: +SKIP
    """
    logger = get_run_logger()
    mlflow_server = load_mlflow(mlflow_block)
    current = get_alias_version(mlflow_server, model_name, CHAMPION)
    if current is None:
        raise RegistryError(f"Model {model_name!r} has no champion: there is nothing to roll back.")
    target = to_version or rollback_target(list_alias_history(mlflow_server, model_name, CHAMPION), current.version)
    if target is None:
        raise RegistryError(
            f"Champion v{current.version} of {model_name!r} replaced no earlier champion: there is no previous "
            "version to roll back to. Pass to_version to choose one."
        )
    move = set_model_alias(mlflow_server, model_name, CHAMPION, target, f"rollback: {reason}", str(flow_run.id or ""))
    emit_model_event(MODEL_ROLLED_BACK, model_name,
                     {"version": target, "previous_version": current.version, "reason": reason})
    serving_url = None
    if redeploy:
        from flows.deploy_model import deploy_model, load_serving
        from tasks.serving_endpoint import serving_status

        if serving_status(load_serving(serving_block), probe=False).get("model_name") == model_name:
            serving_url = deploy_model(model_name=model_name, version=target, alias=CHAMPION, mlflow_block=mlflow_block,
                                       serving_block=serving_block).url
    summary = RollbackSummary(model_name=model_name, from_version=current.version, to_version=target,
                              reason=reason, at=move.at, serving_url=serving_url)
    publish_report(f"{model_name}-rollback",
                   f"# {model_name}: rolled back\n\nchampion v{current.version} -> v{target}\n\nReason: {reason}")
    logger.info("Rolled back %s: v%s -> v%s", model_name, current.version, target)
    return summary
