"""The ``rollout-model`` flow: staging first, infra validation there, then production (staged rollout, CD)."""

from __future__ import annotations

import datetime as dt
import json

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel

from blocks.bentoml_serving import BentoMLServing
from blocks.mlflow_server import MlflowServer
from blocks.rollout_policy import RolloutPolicy
from blocks.settings import state_dir
from flows.common import DEFAULT_MODEL_NAME, load_mlflow, model_cache_dir
from flows.deploy_model import DeploymentSummary, deploy_model, load_serving
from tasks import lineage as L
from tasks.bentoml_packaging import BentoInfo, build_bento, resolve_model_version
from tasks.exceptions import InfraValidationError, MlopsError
from tasks.infra_validation import InfraVerdict, record_infra_validation, validate_infrastructure
from tasks.mlflow_alias_history import restore_alias
from tasks.mlflow_registry import CHAMPION, ModelVersionInfo, download_model_version, tag_model_version
from tasks.prefect_approval import ApprovalDecision, await_approval
from tasks.prefect_artifacts import publish_report
from tasks.serving_endpoint import get_serving_status

#: The embedded staging endpoint (``staging_block=None``): 127.0.0.1:3001, saved under this block name.
STAGING_PORT = 3001
EMBEDDED_STAGING_BLOCK = "embedded-staging"
TAG_ROLLOUT_STAGE = "mlops.rollout.stage"
TAG_ROLLED_OUT_AT = "mlops.rollout.production_at"


class RolloutSummary(BaseModel):
    """What one rollout-model run did."""

    model_name: str
    model_version: str
    staging_url: str
    production_url: str
    infra_validation: str
    figures: dict
    production_status: str
    previous_version: str | None
    approval: str | None = None


def load_rollout_policy(name: str | None) -> RolloutPolicy:
    """Load the named rollout policy, or the default policy."""
    return RolloutPolicy.load(name) if name else RolloutPolicy()


def staging_block_name(name: str | None) -> str:
    """Return the staging block's name; None saves (idempotently) and names the embedded staging endpoint.

    The embedded staging endpoint listens on 127.0.0.1:3001, shares the production store (a bento
    is built once for both) and keeps its own inference log, so load-test traffic never reaches
    production's monitoring.
    """
    if name:
        return name
    embedded_staging().save(EMBEDDED_STAGING_BLOCK, overwrite=True)
    return EMBEDDED_STAGING_BLOCK


def embedded_staging() -> BentoMLServing:
    """Return the embedded staging endpoint's block (127.0.0.1:3001, the state folder's store, its own log)."""
    root = state_dir()
    return BentoMLServing(store_path=str(root / "bentoml"), log_dir=str(root / "staging" / "inference-log"),
                          port=STAGING_PORT)


def staged_bento(mlflow_server: MlflowServer, staging: BentoMLServing, target: ModelVersionInfo) -> BentoInfo:
    """Return the bento that deploy-model built for the staging endpoint (reused from the store, not rebuilt)."""
    return build_bento(staging, target, download_model_version(mlflow_server, target, model_cache_dir(mlflow_server)))


@flow(name="rollout-model", log_prints=True)
def rollout_model(
    model_name: str = DEFAULT_MODEL_NAME,
    alias: str | None = CHAMPION,
    version: str | None = None,
    mlflow_block: str | None = None,
    staging_block: str | None = None,
    production_block: str | None = None,
    policy: str | None = None,
) -> RolloutSummary:
    """Deploy a version to staging, load-test it there, and only if it passes deploy it to production.

    Stages: resolve the version -> ``deploy-model`` on the staging block (a subflow; no alias moves
    there) -> infra validation of the staging endpoint (:func:`tasks.infra_validation.validate_infrastructure`:
    rps, p50/p99, error rate, memory against the policy) -> figures on the version (``mlops.infra.*``),
    an event and an artifact -> ``deploy-model`` on the production block (with ``alias``: moved back
    if production fails, as deploy-model does). A version that fails staging or its infra validation
    never reaches production: production keeps serving, ``alias`` moves back to what it serves, and
    the flow fails with an :class:`~tasks.exceptions.InfraValidationError`. With the policy's
    ``require_approval``, the run pauses before production for a person's decision (a form in the
    Prefect UI, ``prefect-mlops approve|reject``, or ``answer_approval``); a rejection, or no answer
    by ``approval_timeout_s`` with ``approval_default="reject"``, keeps production as it is.

    Args:
        model_name: Registered model name.
        alias: Alias naming the version to roll out (``champion``); moved back if the version fails.
        version: Roll out this version instead of the alias's.
        mlflow_block: Name of a saved ``MlflowServer`` block (None: embedded SQLite).
        staging_block: Name of a saved ``BentoMLServing`` block for staging (None: embedded, 127.0.0.1:3001).
        production_block: Name of a saved ``BentoMLServing`` block for production (None: embedded, :3000).
        policy: Name of a saved ``RolloutPolicy`` block (None: the defaults).

    Returns:
        A :class:`RolloutSummary`: the figures measured on staging and what production serves now.

    Raises:
        InfraValidationError: The version failed staging or its infra validation (recorded as above).
        ServingError: Production refused the validated version (deploy-model recorded why).

    Examples:
        >>> from flows.rollout_model import rollout_model
        >>> rollout_model(staging_block="staging", production_block="production")  # doctest: +SKIP
        >>> rollout_model(version="3", policy="strict-rollout").infra_validation  # doctest: +SKIP
        'v3 passed infra validation: 412 rps, p99 18 ms, 0 errors, 210 MB'
    """
    mlflow_server = load_mlflow(mlflow_block)
    rollout = load_rollout_policy(policy)
    staging_name = staging_block_name(staging_block)
    staging, production = load_serving(staging_name), load_serving(production_block)
    target = resolve_model_version(mlflow_server, model_name, alias, version)
    before = get_serving_status(production)
    live = before.get("model_version") if before.get("model_name") == model_name else None
    try:
        deploy_model(model_name=model_name, alias=None, version=target.version, mlflow_block=mlflow_block,
                     serving_block=staging_name, containerize=False)
        verdict = validate_infrastructure(staging, staged_bento(mlflow_server, staging, target), rollout)
    except MlopsError as exc:
        verdict = InfraVerdict.unmeasured(staging.endpoint_url(), f"staging deployment failed: {exc}")
    restored = restore_alias(mlflow_server, model_name, alias, target.version, live,
                             f"v{target.version} failed infra validation: {'; '.join(verdict.reasons)}",
                             str(flow_run.id or "")) if alias and not verdict.passed else None
    headline = record_infra_validation(mlflow_server, model_name, target.version, verdict, live, restored)
    if not verdict.passed:
        raise _stopped(mlflow_server, target, verdict, headline, live, restored, production)
    decision = _ask_approval(mlflow_server, rollout, target, headline) if rollout.require_approval else None
    if decision is not None and not decision.approved:
        return _rejected(mlflow_server, target, alias, verdict, headline, live, production, staging, decision)
    deployed = deploy_model(model_name=model_name, alias=alias, version=target.version, mlflow_block=mlflow_block,
                            serving_block=production_block)
    return _rolled_out(mlflow_server, target, verdict, headline, deployed, staging, decision)


def _ask_approval(mlflow_server: MlflowServer, rollout: RolloutPolicy, target: ModelVersionInfo,
                  headline: str) -> ApprovalDecision:
    """Pause for a person's decision, showing the gate's verdict and reasons and the infra-validation figures."""
    try:
        reasons = "\n".join(f"- {r}" for r in json.loads(target.tags.get(L.TAG_GATE_REASONS) or "[]"))
    except ValueError:
        reasons = f"- {target.tags.get(L.TAG_GATE_REASONS)}"
    report = (f"# Approve {target.name} v{target.version} for production?\n\n"
              f"**Gate**: {target.tags.get(L.TAG_GATE_VERDICT, 'no verdict recorded')} against champion "
              f"v{target.tags.get(L.TAG_GATE_CHAMPION, '-')}\n\n{reasons or '- no reasons recorded'}\n\n"
              f"**Infra validation on staging**: {headline}")
    return await_approval(target.name, target.version, report, timeout_s=rollout.approval_timeout_s,
                          default=rollout.approval_default, mlflow_server=mlflow_server)


def _rejected(mlflow_server: MlflowServer, target: ModelVersionInfo, alias: str | None, verdict: InfraVerdict,
              headline: str, live: str | None, production: BentoMLServing, staging: BentoMLServing,
              decision: ApprovalDecision) -> RolloutSummary:
    """Keep a rejected version out of production: alias back to what serves, stage tag, artifact, summary."""
    why = f"v{target.version} rejected by {decision.reviewer} ({decision.decided_by}): {decision.reason}"
    restored = restore_alias(mlflow_server, target.name, alias, target.version, live, why[:900],
                             str(flow_run.id or "")) if alias else None
    tag_model_version(mlflow_server, target.name, target.version, {TAG_ROLLOUT_STAGE: "rejected by approval"})
    still, moved = _production_kept(target.name, live, production, restored)
    publish_report(f"{target.name}-rollout",
                   f"# {target.name}: v{target.version} stays out of production\n\n1. staging "
                   f"{staging.endpoint_url()}\n2. {headline}\n3. approval: {why}\n4. production: not deployed; "
                   f"{still}{moved}", description=f"{why}; {still}")
    print(f"{why}; {still}{moved}")
    return RolloutSummary(
        model_name=target.name, model_version=target.version, staging_url=staging.endpoint_url(),
        production_url=production.endpoint_url(), infra_validation=headline,
        figures=verdict.figures.model_dump(exclude={"problems"}), production_status="rejected",
        previous_version=live, approval=decision.render())


def _production_kept(model_name: str, live: str | None, production: BentoMLServing,
                     restored: str | None) -> tuple[str, str]:
    """Say what production keeps serving, and where the alias went back to (empty when it did not move)."""
    still = f"v{live} keeps serving at {production.endpoint_url()}" if live else \
        f"nothing of {model_name} serves at {production.endpoint_url()}"
    return still, f"; alias moved back to v{restored}" if restored else ""


def _stopped(mlflow_server: MlflowServer, target: ModelVersionInfo, verdict: InfraVerdict, headline: str,
             live: str | None, restored: str | None, production: BentoMLServing) -> InfraValidationError:
    """Record that a version stays out of production (stage tag, rollout artifact); return the error to raise."""
    still, moved = _production_kept(target.name, live, production, restored)
    reasons = "; ".join(verdict.reasons)
    tag_model_version(mlflow_server, target.name, target.version, {TAG_ROLLOUT_STAGE: "rejected on staging"})
    publish_report(f"{target.name}-rollout",
                   f"# {target.name}: v{target.version} stays out of production\n\n"
                   f"1. staging {verdict.figures.url}\n2. {headline}\n3. production: not deployed; {still}{moved}\n\n"
                   f"**Reason**\n\n```\n{reasons[:3000]}\n```", description=f"{headline}; {still}")
    why = reasons[:1500].rstrip(".")
    return InfraValidationError(f"Rolling out {target.name} v{target.version} stopped on staging: {why}. "
                                f"It was not deployed to production: {still}{moved}. Fix the model or its serving "
                                "settings, or relax the rollout policy, and roll out again.", verdict.reasons)


def _rolled_out(mlflow_server: MlflowServer, target: ModelVersionInfo, verdict: InfraVerdict, headline: str,
                deployed: DeploymentSummary, staging: BentoMLServing,
                decision: ApprovalDecision | None = None) -> RolloutSummary:
    """Record a version that passed staging and serves in production: stage tag, rollout artifact, summary."""
    tag_model_version(mlflow_server, target.name, target.version,
                      {TAG_ROLLOUT_STAGE: "production", TAG_ROLLED_OUT_AT: dt.datetime.now(dt.UTC).isoformat()})
    summary = RolloutSummary(
        model_name=target.name, model_version=target.version, staging_url=staging.endpoint_url(),
        production_url=deployed.url, infra_validation=headline,
        figures=verdict.figures.model_dump(exclude={"problems"}), production_status=deployed.status,
        previous_version=deployed.previous_version, approval=decision.render() if decision else None)
    was = f" (was v{deployed.previous_version})" if deployed.previous_version else ""
    publish_report(f"{target.name}-rollout",
                   f"# {target.name}: v{target.version} rolled out\n\n1. staging {staging.endpoint_url()}\n"
                   f"2. {headline}\n3. production {deployed.url}: v{target.version} {deployed.status}{was}",
                   [{"stage": "staging", "url": staging.endpoint_url(), "result": "deployed"},
                    {"stage": "infra validation", "url": staging.endpoint_url(), "result": headline},
                    {"stage": "production", "url": deployed.url, "result": f"{deployed.status}{was}"}],
                   description=f"v{target.version} serves at {deployed.url} after {headline}")
    print(f"{headline}\nv{target.version} serves at {deployed.url}{was}")
    return summary
