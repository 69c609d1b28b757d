"""The ``deploy-model`` flow: package the registry's champion as a bento, serve it, verify it, swap it in."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel

from blocks.bentoml_serving import BentoMLServing
from blocks.mlflow_server import MlflowServer
from flows.common import DEFAULT_MODEL_NAME, load_mlflow, model_cache_dir
from tasks.bentoml_container import ContainerRecipe, store_container_recipe, write_container_recipe
from tasks.bentoml_packaging import BentoInfo, BrokenModelArtifactError, build_bento, resolve_model_version
from tasks.bentoml_serving import ensure_front, start_bento_server, stop_bento_server, switch_live_backend
from tasks.bentoml_supervisor import ensure_supervisor, heal_serving_endpoint
from tasks.events import DEPLOYMENT_FAILED, MODEL_DEPLOYED, emit_model_event
from tasks.exceptions import PackagingError, ServingError
from tasks.mlflow_alias_history import restore_alias
from tasks.mlflow_registry import (
    CHAMPION,
    ModelVersionInfo,
    download_model_version,
    tag_model_version,
)
from tasks.prefect_artifacts import publish_report
from tasks.prefect_assets import bento_asset, model_asset, record_materialization
from tasks.serving_checks import smoke_test_server, verify_live_endpoint
from tasks.serving_endpoint import BackendInfo, get_serving_status, stop_serving
from tasks.serving_standby import STANDBY_TTL_S, adopt_standby, start_standby

TAG_DEPLOYED_AT = "mlops.deployment.deployed_at"
TAG_DEPLOYED_URL = "mlops.deployment.url"
TAG_DEPLOYED_BENTO = "mlops.deployment.bento"
TAG_FAILED_AT = "mlops.deployment.failed_at"
TAG_FAILED_REASON = "mlops.deployment.failed_reason"


class DeploymentSummary(BaseModel):
    """What one deploy-model run did."""

    model_name: str
    model_version: str
    status: Literal["deployed", "unchanged"]
    url: str
    bento: str
    previous_version: str | None
    previous_bento: str | None
    since: str | None
    run_id: str | None
    data_rev: str | None
    dockerfile: str | None
    image: str | None
    container_message: str | None
    backend_pid: int | None
    standby: str | None = None  # "adopted": the training flow's standby backend; "discarded: <why>"; None: none

    def render(self) -> str:
        """Return a readable summary."""
        return "\n".join([
            f"endpoint      {self.url} ({self.status})",
            f"model         {self.model_name} version {self.model_version} (was {self.previous_version or '-'})",
            f"bento         {self.bento}" + (f" (replaced {self.previous_bento})" if self.previous_bento else ""),
            f"since         {self.since}",
            f"lineage       run {self.run_id}  data rev {(self.data_rev or '-')[:12]}",
            f"container     {self.image or self.dockerfile or '-'}",
            f"backend       pid {self.backend_pid or '-'}" + (f" (standby {self.standby})" if self.standby else ""),
        ])


def load_serving(name: str | None) -> BentoMLServing:
    """Load the named BentoML serving block, or the embedded default (127.0.0.1:3000, store under the state folder)."""
    return BentoMLServing.load(name) if name else BentoMLServing.embedded()


def _fail(mlflow_server: MlflowServer, serving: BentoMLServing, target: ModelVersionInfo, alias: str | None,
          serving_before: dict, reason: str) -> ServingError:
    """Record a failed deployment (alias moved back, MLflow tag, event, artifact) and return the error to raise."""
    logger = get_run_logger()
    live_version = serving_before.get("model_version") if serving_before.get("model_name") == target.name else None
    restored = restore_alias(mlflow_server, target.name, alias, target.version, live_version,
                             f"deployment of v{target.version} failed: {reason}", str(flow_run.id or "")) \
        if alias else None
    tag_model_version(mlflow_server, target.name, target.version,
                      {TAG_FAILED_AT: dt.datetime.now(dt.UTC).isoformat(), TAG_FAILED_REASON: reason[:4000]})
    emit_model_event(DEPLOYMENT_FAILED, target.name, {"version": target.version, "reason": reason[:2000],
                                                      "serving_version": live_version, "alias_restored_to": restored})
    still = f"v{live_version} keeps serving at {serving.endpoint_url()}" if live_version else \
        f"nothing serves at {serving.endpoint_url()}"
    moved = f"; alias {alias!r} moved back to v{restored}" if restored else ""
    publish_report(f"{target.name}-deployment",
                   f"# {target.name}: deployment of v{target.version} failed\n\n{still}{moved}.\n\n"
                   f"**Reason**\n\n```\n{reason[:3000]}\n```")
    logger.error("Deployment of %s v%s failed: %s", target.name, target.version, reason)
    return ServingError(f"Deploying {target.name} v{target.version} failed: {reason[:1500]} -- {still}{moved}.")


@flow(name="deploy-model", log_prints=True)
def deploy_model(
    model_name: str = DEFAULT_MODEL_NAME,
    alias: str | None = CHAMPION,
    version: str | None = None,
    mlflow_block: str | None = None,
    serving_block: str | None = None,
    force: bool = False,
    containerize: bool = True,
) -> DeploymentSummary:
    """Package a registered version as a bento, start it, smoke-test it and swap it in behind the stable URL.

    Steps: resolve the version (``version``, else the one ``alias`` points to) -> download it ->
    build the bento (reused when already built) -> start ``bentoml serve`` on a private port (or
    adopt the endpoint's standby backend of this bento, which the training flow started after the
    promotion) and wait for readiness -> smoke request from the model's input example -> repoint
    the stable endpoint -> verify through the stable URL -> drain and stop the backend it replaced
    -> write the bento's Dockerfile. The stable URL answers throughout.

    If the new version fails readiness, the smoke request or the verification, the previous
    version keeps serving, the alias moves back to it (when it pointed to the failed version),
    and the reason is recorded (MLflow version tag ``mlops.deployment.failed_reason``, event
    ``mlops.deployment.failed``, Prefect artifact); the flow then fails with a ``ServingError``.

    Args:
        model_name: Registered model name.
        alias: Alias naming the version that should serve (``champion``); moved back on failure.
        version: Deploy this version instead of the alias's (the rollback flow passes one).
        mlflow_block: Name of a saved ``MlflowServer`` block (None: embedded SQLite).
        serving_block: Name of a saved ``BentoMLServing`` block (None: embedded, 127.0.0.1:3000).
        force: Redeploy even when the same bento already serves.
        containerize: Run ``bentoml containerize`` where a Docker engine exists (the Dockerfile is
            written either way).

    Returns:
        A :class:`DeploymentSummary` with the live URL, the version and bento, and what it replaced.

    Raises:
        RegistryError: The model, alias or version does not exist.
        PackagingError: The bento could not be built (e.g. the model has no signature).
        ServingError: The new version did not pass readiness / smoke / verification (recorded as above).

    Examples:
        >>> from flows.deploy_model import deploy_model
        >>> summary = deploy_model()  # doctest: +SKIP
        >>> summary.url  # doctest: +SKIP
        'http://127.0.0.1:3000'
        >>> deploy_model(version="3", serving_block="local-serving")  # doctest: +SKIP
    """
    logger = get_run_logger()
    mlflow_server = load_mlflow(mlflow_block)
    serving = load_serving(serving_block)

    target = resolve_model_version(mlflow_server, model_name, alias, version)
    before = get_serving_status(serving)
    model_dir = download_model_version(mlflow_server, target, model_cache_dir(mlflow_server))
    try:
        bento: BentoInfo = build_bento(serving, target, model_dir)
    except BrokenModelArtifactError as exc:  # the version is broken (not the infrastructure): champion moves back
        raise _fail(mlflow_server, serving, target, alias, before, str(exc)) from exc
    if not force and before.get("state") == "serving" and before.get("bento") == bento.tag:
        ensure_supervisor(serving)
        logger.info("%s already serves %s; nothing to do (force=True redeploys)", serving.endpoint_url(), bento.tag)
        summary = DeploymentSummary(
            model_name=model_name, model_version=target.version, status="unchanged", url=serving.endpoint_url(),
            bento=bento.tag, previous_version=target.version, previous_bento=bento.tag, since=before.get("since"),
            run_id=target.run_id, data_rev=bento.data_rev, dockerfile=None, image=None, container_message=None,
            backend_pid=(before.get("backend") or {}).get("pid"))
        print(summary.render())
        return summary
    switch, backend, standby = _swap_in(mlflow_server, serving, target, alias, before, bento)
    return _record_deployed(mlflow_server, serving, target, bento, switch, backend,
                            _container(serving, bento, containerize), standby)


def _container(serving: BentoMLServing, bento: BentoInfo, containerize: bool) -> ContainerRecipe:
    """Write the bento's Dockerfile (and build the image where Docker runs) once the new version serves.

    After the swap, so that it is off the path from promotion to serving (1.1 s of the loop's latency here,
    minutes with a Docker build; ``benchmarks/bench_loop.py --verbose``); its failure is reported in the
    summary, and the verified version keeps serving.
    """
    try:
        return write_container_recipe(serving, bento, containerize)
    except PackagingError as exc:
        get_run_logger().warning("The container recipe of %s failed (the model serves): %s", bento.tag, exc)
        return ContainerRecipe(bento_tag=bento.tag, dockerfile="", image=None, message=f"failed: {exc}")


def prebuild_bento(mlflow_server: MlflowServer, serving_block: str | None, model_name: str,
                   version: str, standby: bool = True, standby_ttl_s: float = STANDBY_TTL_S) -> str | None:
    """Build a just-promoted version's bento and start its backend while ``deploy-model`` starts.

    The training flow calls this after the promotion event, so the build and the backend's
    start-up overlap with the event, the runner and the deploy flow's start
    (``benchmarks/bench_loop.py --verbose`` shows the stages). ``build_bento`` holds a lock per
    bento, so a deploy that arrives mid-build waits and reuses it. With ``standby``, the bento's
    ``bentoml serve`` starts on a private port as the endpoint's standby (``tasks/serving_standby.py``)
    while the old version still serves; ``deploy-model`` adopts it once ready, and still smoke-tests,
    swaps and verifies. A failure here is only logged: ``deploy-model`` builds, starts and checks
    the bento itself.

    Args:
        mlflow_server: The MLflow block.
        serving_block: Name of the saved ``BentoMLServing`` block the deploy uses (None: embedded).
        model_name: Registered model name.
        version: The promoted version.
        standby: Also start the bento's backend as the endpoint's standby (when a supervisor runs).
        standby_ttl_s: Seconds after which a standby no deployment adopted is stopped.

    Returns:
        The bento tag, or None when the build failed.

    Examples:
        >>> prebuild_bento(MlflowServer.embedded(), None, "churn-classifier", "2")  # doctest: +SKIP
        'churn_classifier:v2-...'
    """
    try:
        target = resolve_model_version(mlflow_server, model_name, None, version)
        model_dir = download_model_version(mlflow_server, target, model_cache_dir(mlflow_server))
        serving = load_serving(serving_block)
        bento = build_bento(serving, target, model_dir)
    except Exception as exc:  # noqa: BLE001 - an optimisation: deploy-model builds and reports on its own
        get_run_logger().warning("Pre-building the bento of %s v%s failed (deploy-model will build it): %s",
                                 model_name, version, exc)
        return None
    if standby:
        try:
            start_standby(serving, bento, standby_ttl_s)
        except Exception as exc:  # noqa: BLE001 - likewise: deploy-model starts its own backend
            get_run_logger().warning("Starting the standby backend of %s failed (deploy-model will start one): %s",
                                     bento.tag, exc)
    return bento.tag


def _swap_in(mlflow_server: MlflowServer, serving: BentoMLServing, target: ModelVersionInfo, alias: str | None,
             before: dict, bento: BentoInfo) -> tuple[Any, BackendInfo, str | None]:
    """Start the bento on a private port, smoke-test it, repoint the stable URL, verify, stop what it replaced.

    A ready standby of the bento (started by the training flow, ``prebuild_bento``) is adopted
    instead of starting one; it gets the same smoke request, and one that fails it is stopped and
    replaced by a backend started here. Any failure leaves the previous backend serving (or nothing,
    if nothing served) and raises the recorded :class:`ServingError` from :func:`_fail`.

    Returns:
        The switch, the backend now serving, and the standby's outcome (None: there was none).
    """
    ensure_front(serving)
    backend: BackendInfo | None = None
    adoption = adopt_standby(serving, bento)
    standby = None if adoption.outcome == "none" else adoption.outcome
    try:
        backend = adoption.backend
        if backend is not None:
            try:
                smoke_test_server(backend.url, bento)
            except ServingError as exc:
                stop_bento_server(serving, backend, drain=False)
                backend, standby = None, f"discarded: smoke request failed: {exc}"[:1000]
                get_run_logger().warning("Standby backend of %s %s", bento.tag, standby)
        if backend is None:
            backend = start_bento_server(serving, bento)
            smoke_test_server(backend.url, bento)
        switch = switch_live_backend(serving, backend)
    except Exception as exc:
        if backend is not None:  # never leave a backend running that does not serve
            stop_bento_server(serving, backend, drain=False)
        if isinstance(exc, ServingError):
            raise _fail(mlflow_server, serving, target, alias, before, str(exc)) from exc
        raise
    try:
        verify_live_endpoint(serving, bento)
    except ServingError as exc:
        if switch.previous is not None:
            switch_live_backend(serving, switch.previous)
            stop_bento_server(serving, backend)
        else:
            stop_serving(serving)  # nothing served before: stop the endpoint rather than point it at nothing
        raise _fail(mlflow_server, serving, target, alias, before, f"verification through the stable URL: {exc}") \
            from exc
    if switch.previous is not None and switch.previous.pid != backend.pid:
        stop_bento_server(serving, switch.previous)
    return switch, backend, standby


def _record_deployed(mlflow_server: MlflowServer, serving: BentoMLServing, target: ModelVersionInfo,
                     bento: BentoInfo, switch: Any, backend: BackendInfo, recipe: Any,
                     standby: str | None = None) -> DeploymentSummary:
    """Record a deployment that serves: version tags, event, asset, summary artifact."""
    model_name = target.name
    supervisor = ensure_supervisor(serving)
    watch = f"pid {supervisor['pid']} restarts a dead front or backend" if supervisor else "off"
    tag_model_version(mlflow_server, model_name, target.version,
                      {TAG_DEPLOYED_AT: switch.since, TAG_DEPLOYED_URL: switch.url, TAG_DEPLOYED_BENTO: bento.tag})
    emit_model_event(MODEL_DEPLOYED, model_name, {"version": target.version, "url": switch.url, "bento": bento.tag,
                                                  "previous_version": switch.previous.model_version
                                                  if switch.previous else None})
    record_materialization(bento_asset(serving.endpoint_url(), bento.tag.split(":")[0]), bento.tag.split(":")[0],
                           "bentoml", {"bento": bento.tag, "version": target.version, "url": switch.url},
                           upstream=[model_asset(mlflow_server.registry_uri or mlflow_server.tracking_uri, model_name)],
                           url=switch.url)
    summary = DeploymentSummary(
        model_name=model_name, model_version=target.version, status="deployed", url=switch.url, bento=bento.tag,
        previous_version=switch.previous.model_version if switch.previous else None,
        previous_bento=switch.previous.bento_tag if switch.previous else None, since=switch.since,
        run_id=target.run_id, data_rev=bento.data_rev, dockerfile=recipe.dockerfile, image=recipe.image,
        container_message=recipe.message, backend_pid=backend.pid, standby=standby)
    dockerfile_link = store_container_recipe(mlflow_server, recipe, target.run_id)
    dockerfile = f"[{bento.tag}]({dockerfile_link}) (on the MLflow run)" if dockerfile_link else \
        f"`{recipe.dockerfile or '-'}`"
    publish_report(f"{model_name}-deployment",
                   f"# {model_name}: v{target.version} serves at {switch.url}\n\n```\n{summary.render()}\n```\n\n"
                   f"Dockerfile: {dockerfile}\n\nContainer: {recipe.message}\n\n"
                   f"Supervisor: {watch}\n\n"
                   f"Labels: `{bento.labels}`",
                   [{"field": k, "value": str(v)} for k, v in summary.model_dump().items()],
                   {"Live endpoint": f"{switch.url}/model", "Dockerfile": dockerfile_link or ""},
                   description=f"v{target.version} serves at {switch.url}"
                   + (f" (was v{summary.previous_version})" if summary.previous_version else ""))
    print(summary.render())
    return summary


@flow(name="watch-serving", log_prints=True)
def watch_serving(serving_block: str | None = None) -> dict:
    """Check a serving endpoint once: restart a dead front, backend or supervisor (a scheduled backstop).

    The endpoint's supervisor process restarts a dead front or backend within seconds; this flow,
    scheduled every few minutes, also brings back a supervisor that was itself killed.

    Args:
        serving_block: Name of a saved ``BentoMLServing`` block (None: embedded, 127.0.0.1:3000).

    Returns:
        ``{"actions": [what was restarted], "supervisor": {"pid", "started_at"} | None}``.

    Examples:
        >>> from flows.deploy_model import watch_serving
        >>> watch_serving()  # doctest: +SKIP
        {'actions': [], 'supervisor': None}
    """
    serving = load_serving(serving_block)
    healed = heal_serving_endpoint(serving)
    supervisor = ensure_supervisor(serving) if get_serving_status(serving).get("deployed") else None
    print(f"{serving.endpoint_url()}: {healed['actions'] or 'all processes running'}")
    return {**healed, "supervisor": supervisor}
