"""Read the deployments registered on a Prefect server back as a pipeline spec.

Each deployment (optionally only those of one work pool) becomes a
:class:`~deployments.definitions.DeploymentDefinition`: its entrypoint, description, tags, first
schedule, default parameters, and, from the automations that run it, its event triggers (the
parameters every trigger renders, the model name and ``trigger``, are left out again). Then
:func:`deployments.pipeline_spec_deploy.from_definitions` writes them as a spec.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from deployments.definitions import PROJECT_ROOT, TRIGGER_PARAMETER, DeploymentDefinition, EventTrigger
from deployments.pipeline_spec import PipelineSpec

#: Run parameters that every event trigger of a definition renders itself (see ``EventTrigger.rendered_parameters``).
RENDERED = {"model_name", "trigger"}


def _entrypoint(entrypoint: str) -> str:
    """Return an entrypoint relative to the project when the server holds an absolute one."""
    path, _, function = entrypoint.rpartition(":")
    try:
        path = str(Path(path).resolve().relative_to(PROJECT_ROOT)) if Path(path).is_absolute() else path
    except ValueError:
        pass
    return f"{path}:{function}"


def _trigger(automation: Any, parameters: dict[str, Any]) -> EventTrigger:
    trigger = automation.trigger
    match = getattr(trigger.match, "root", trigger.match)  # a ResourceSpecification: label -> value(s)
    labels = {k: v if isinstance(v, str) else v[0] for k, v in dict(match).items() if k != "prefect.resource.id"}
    extras = {k: v for k, v in (parameters or {}).items() if k not in RENDERED}
    if (parameters or {}).get("trigger") not in (None, TRIGGER_PARAMETER):
        extras["trigger"] = parameters["trigger"]
    return EventTrigger(tuple(sorted(trigger.expect)), trigger.within, labels, extras)


def _definition(deployment: Any, automations: list[Any]) -> DeploymentDefinition:
    cron = interval = None
    if deployment.schedules:
        schedule = deployment.schedules[0].schedule
        cron = getattr(schedule, "cron", None)
        interval = getattr(schedule, "interval", None)
        interval = interval if isinstance(interval, dt.timedelta) or interval is None else dt.timedelta(
            seconds=float(interval))
    triggers = []
    for automation in automations:
        for action in automation.actions:
            if getattr(action, "deployment_id", None) == deployment.id:
                triggers.append(_trigger(automation, getattr(action, "parameters", None) or {}))
    return DeploymentDefinition(
        _entrypoint(deployment.entrypoint or ""), deployment.name, deployment.description or "", cron=cron,
        interval=interval, parameters=dict(deployment.parameters or {}), triggers=tuple(triggers),
        tags=tuple(deployment.tags or ()))


async def _read(work_pool: str | None) -> list[DeploymentDefinition]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    async with get_client() as client:
        pools = WorkPoolFilter(name=WorkPoolFilterName(any_=[work_pool])) if work_pool else None
        deployments = await client.read_deployments(work_pool_filter=pools)
        automations = [a for a in await client.read_automations() if a.enabled]
    return [_definition(d, automations) for d in sorted(deployments, key=lambda d: d.created or dt.datetime.min)
            if d.entrypoint]


def definitions_from_server(work_pool: str | None = None) -> list[DeploymentDefinition]:
    """Return the deployments of the current Prefect server (``PREFECT_API_URL``) as definitions.

    Args:
        work_pool: Only the deployments of this work pool (None: all).

    Returns:
        The definitions, in order of creation.

    Examples:
        >>> [d.name for d in definitions_from_server("mlops")]  # doctest: +SKIP
        ['scheduled', 'on-new-data', ...]
    """
    return asyncio.run(_read(work_pool))


def spec_from_server(name: str = "prefect-mlops", work_pool: str | None = None) -> PipelineSpec:
    """Write the current Prefect server's deployments out as a pipeline spec.

    Args:
        name: The pipeline's name.
        work_pool: Only the deployments of this work pool (None: all).

    Returns:
        The spec (``to_definitions`` of it gives the server's deployments back).

    Examples:
        >>> from deployments.pipeline_spec_yaml import dump_spec
        >>> print(dump_spec(spec_from_server(work_pool="mlops")))  # doctest: +SKIP
    """
    from deployments.pipeline_spec_deploy import from_definitions

    return from_definitions(definitions_from_server(work_pool), name=name)
