"""One definition of every deployment, usable three ways.

* ``serve_all()``: every deployment in one local process (``prefect.serve``), no work pool.
* ``deploy_all(work_pool)``: register them with a Prefect server work pool (workers run them).
* ``write_prefect_yaml()``: the same definitions as a ``prefect.yaml`` for ``prefect deploy --all``.

``deploy_all`` and ``write_prefect_yaml`` take the same inputs (work pool, parameters through
:func:`definitions`, job variables, code source) and give the same deployments: names, pool,
parameters, job variables and pull steps (:mod:`deployments.code_source`).

``prefect-mlops serve`` / ``prefect-mlops deploy`` / ``prefect-mlops write-yaml`` wrap them.
Retraining starts by itself: on a cron schedule, on new data (``watch-data`` emits an event),
and on drift or decay (``monitor-model`` emits events); a reactive trigger's ``within``
window is the cool-down, so one drift episode starts one retrain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployments.code_source import PROJECT_ROOT, CodeSource
from tasks.events import (
    DATA_VERSIONED,
    DRIFT_DETECTED,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
    PERFORMANCE_DECAYED,
)
from tasks.system import wait_until

#: The model an event is about: its ``prefect.resource.name`` label, else the id minus ``mlops.model.``.
#: Parenthesised: Prefect appends ``| tojson`` to a single-expression template.
MODEL_NAME_TEMPLATE = "{{ (event.resource.name or event.resource.id | replace('mlops.model.', '', 1)) }}"

#: What a triggered run records as its cause (rendered by Prefect from the triggering event).
#: Every expression renders for any event the contract in tasks/events.py allows (no payload, no name label).
TRIGGER_PARAMETER = {
    "event": "{{ event.event }}",
    "event_id": "{{ event.id | string }}",
    "occurred": "{{ event.occurred | string }}",
    "resource": "{{ event.resource.id }}",
    "payload": "{{ event.payload | default({}) }}",
}

#: Arrival time of the first prediction of the window that drifted or decayed (its start when the event
#: does not say; for an event-time window the start is an event time, not an arrival time), None when the
#: event has no window: the flow then uses its ``feedback_hours``.
WINDOW_START_TEMPLATE = "{{ (event.payload.window.first_arrival or event.payload.window.start) | default(none) }}"


@dataclass(frozen=True)
class EventTrigger:
    """A deployment trigger on prefect-mlops events for any model."""

    events: tuple[str, ...]
    cooldown: dt.timedelta
    labels: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def rendered_parameters(self) -> dict[str, Any]:
        """Return the run parameters as Prefect templates over the triggering event."""
        import copy

        return {"model_name": MODEL_NAME_TEMPLATE, "trigger": copy.deepcopy(TRIGGER_PARAMETER), **self.parameters}

    def to_prefect(self) -> Any:
        """Return the ``DeploymentEventTrigger``."""
        from prefect.events import DeploymentEventTrigger

        return DeploymentEventTrigger(
            name=f"on {' / '.join(self.events)}",
            expect=set(self.events),
            match={"prefect.resource.id": "mlops.model.*", **self.labels},
            for_each={"prefect.resource.id"},
            posture="Reactive",
            threshold=1,
            within=self.cooldown,
            parameters=self.rendered_parameters(),
        )

    def to_yaml(self) -> dict[str, Any]:
        """Return the trigger as a ``prefect.yaml`` entry."""
        return {
            "type": "event", "enabled": True, "expect": list(self.events),
            "match": {"prefect.resource.id": "mlops.model.*", **self.labels},
            "for_each": ["prefect.resource.id"], "posture": "Reactive", "threshold": 1,
            "within": int(self.cooldown.total_seconds()),
            "parameters": self.rendered_parameters(),
        }


@dataclass(frozen=True)
class DeploymentDefinition:
    """One deployment: which flow, its name, schedule, triggers and default parameters."""

    entrypoint: str
    name: str
    description: str
    cron: str | None = None
    interval: dt.timedelta | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    triggers: tuple[EventTrigger, ...] = ()
    tags: tuple[str, ...] = ("prefect-mlops",)

    @property
    def flow_name(self) -> str:
        """The flow's name (deployments are addressed as ``flow-name/deployment``)."""
        return self.load_flow().name

    def load_flow(self) -> Any:
        """Import the flow object from its entrypoint."""
        from prefect.flows import load_flow_from_entrypoint

        return load_flow_from_entrypoint(str(PROJECT_ROOT / self.entrypoint))

    def schedule_kwargs(self) -> dict[str, Any]:
        """Return the schedule arguments of ``to_deployment``."""
        if self.cron:
            return {"cron": self.cron}
        if self.interval:
            return {"interval": self.interval}
        return {}


def definitions(cooldown: dt.timedelta = dt.timedelta(hours=6), monitor_every: dt.timedelta = dt.timedelta(hours=1),
                watch_every: dt.timedelta = dt.timedelta(minutes=5), retrain_cron: str = "0 3 * * *",
                parameters: dict[str, Any] | None = None, staged_rollout: bool = False) -> list[DeploymentDefinition]:
    """Return every deployment of prefect-mlops.

    Args:
        cooldown: Shortest time between two retrains caused by events for one model.
        monitor_every: Interval of the monitoring deployment.
        watch_every: Interval of the data watch.
        retrain_cron: Cron schedule of the periodic retrain.
        parameters: Default parameters shared by every deployment whose flow takes them
            (e.g. ``{"mlflow_block": "prod-mlflow", "serving_block": "prod-serving"}``); each
            deployment keeps only those its flow accepts.
        staged_rollout: A promotion starts ``rollout-model/on-promotion`` (staging, infra validation,
            approval when the policy asks, then production; level 2) instead of ``deploy-model/on-promotion``,
            which then answers rollbacks only (a version that served before goes straight back).

    Returns:
        The definitions.

    Examples:
        >>> [d.name for d in definitions()][:3]
        ['scheduled', 'on-new-data', 'on-drift']
    """
    shared = dict(parameters or {})
    training = "flows/continuous_training.py:continuous_training"
    retrain = {**shared, "prebuild_bento": True}  # the on-promotion deploy follows: overlap its bento build
    # rollout-model's production endpoint is the shared serving block unless production_block is given.
    rollout = {**({"production_block": shared["serving_block"]} if shared.get("serving_block") else {}), **shared}
    return [
        DeploymentDefinition(training, "scheduled", "Retrain on the latest data and labelled traffic, nightly.",
                             cron=retrain_cron, parameters={**retrain, "feedback_hours": 24.0}),
        DeploymentDefinition(training, "on-new-data", "Retrain when watch-data announces new data.",
                             parameters=retrain,
                             triggers=(EventTrigger((DATA_VERSIONED,), cooldown / 6, {"mlops.origin": "data-watch"}),)),
        DeploymentDefinition(training, "on-drift", "Retrain on labelled recent traffic when monitoring sees drift "
                             "or decay; one retrain per cool-down window.",
                             parameters={**retrain, "feedback_hours": 24.0},
                             triggers=(EventTrigger((DRIFT_DETECTED, PERFORMANCE_DECAYED), cooldown,
                                                    parameters={"feedback_since": WINDOW_START_TEMPLATE}),
                                       )),
        DeploymentDefinition("flows/monitor_model.py:monitor_model", "hourly", "Drift, quality and performance of "
                             "the serving champion.", interval=monitor_every, parameters=shared),
        DeploymentDefinition("flows/watch_data.py:watch_data", "watch", "Look for new data.", interval=watch_every,
                             parameters=shared),
        DeploymentDefinition("flows/deploy_model.py:deploy_model", "on-promotion",
                             "Serve the previous champion again." if staged_rollout else "Serve the new champion.",
                             parameters=shared, triggers=(EventTrigger(
                                 (MODEL_ROLLED_BACK,) if staged_rollout else (MODEL_PROMOTED, MODEL_ROLLED_BACK),
                                 dt.timedelta(seconds=1)),)),
        DeploymentDefinition("flows/deploy_model.py:watch_serving", "every-5-minutes", "Restart a dead front, "
                             "backend or supervisor of the serving endpoint (the supervisor's own backstop).",
                             interval=watch_every, parameters=shared),
        DeploymentDefinition("flows/batch_scoring.py:batch_scoring", "manual", "Score a data set with the champion.",
                             parameters=shared),
        DeploymentDefinition("flows/rollback_model.py:rollback_model", "manual", "Make the previous champion serve.",
                             parameters=shared),
        DeploymentDefinition("flows/reproduce_model.py:reproduce_model", "manual", "Retrain a version from its "
                             "recorded data rev and settings; compare its metrics.", parameters=shared),
        DeploymentDefinition("flows/rollout_model.py:rollout_model", "manual", "Staged rollout: deploy to staging, "
                             "load-test it against the rollout policy, then deploy to production.", parameters=rollout),
        DeploymentDefinition("flows/ml_test_score.py:ml_test_score", "manual", "Score the pipeline's production "
                             "readiness (ML Test Score, 28 tests) from recorded evidence.", parameters=shared),
        *([DeploymentDefinition("flows/rollout_model.py:rollout_model", "on-promotion", "Roll the new champion "
                                "out: staging, infra validation, approval if the policy asks, production.",
                                parameters=rollout,
                                triggers=(EventTrigger((MODEL_PROMOTED,), dt.timedelta(seconds=1)),))]
          if staged_rollout else []),
    ]


def _accepted(flow: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    names = set(flow.parameters.properties)
    return {k: v for k, v in parameters.items() if k in names}


def runner_deployments(defs: list[DeploymentDefinition], from_source: bool = False,
                       work_pool_name: str | None = None, job_variables: dict[str, Any] | None = None,
                       source: CodeSource | None = None) -> list[Any]:
    """Build Prefect ``RunnerDeployment`` objects from the definitions.

    Args:
        defs: The definitions.
        from_source: Load flows from the project folder (for work-pool deployments).
        work_pool_name: Work pool for ``deploy``.
        job_variables: Work-pool job variables of every deployment (``deploy`` only).
        source: Where workers get the code (default: :meth:`CodeSource.detect`; ``from_source`` only).

    Returns:
        Deployments for ``prefect.serve`` or ``prefect.deploy``.
    """
    deployments = []
    storage = (source or CodeSource.detect()).storage() if from_source else None
    for definition in defs:
        flow = definition.load_flow()
        if storage is not None:
            flow = flow.from_source(source=storage, entrypoint=definition.entrypoint)
        triggers = [t.to_prefect() for t in definition.triggers]
        for trigger in triggers:
            trigger.parameters = _accepted(flow, trigger.parameters or {})
        deployments.append(flow.to_deployment(
            name=definition.name, description=definition.description, tags=list(definition.tags),
            parameters=_accepted(flow, definition.parameters), triggers=triggers or None,
            work_pool_name=work_pool_name, job_variables=dict(job_variables or {}) if work_pool_name else None,
            **definition.schedule_kwargs()))
    return deployments


def serve_all(defs: list[DeploymentDefinition] | None = None, limit: int | None = None) -> None:
    """Serve every deployment from this process until interrupted.

    Args:
        defs: The definitions (default: :func:`definitions`).
        limit: Most flow runs at once.

    Examples:
        >>> from deployments.definitions import serve_all
        >>> serve_all()  # doctest: +SKIP
    """
    from prefect import serve

    serve(*runner_deployments(defs or definitions()), limit=limit)


def deploy_all(work_pool_name: str, defs: list[DeploymentDefinition] | None = None,
               job_variables: dict[str, Any] | None = None, source: CodeSource | None = None) -> list[str]:
    """Register every deployment with a work pool of the current Prefect server.

    Args:
        work_pool_name: An existing work pool (e.g. ``prefect work-pool create mlops --type process``).
        defs: The definitions (default: :func:`definitions`).
        job_variables: Work-pool job variables of every deployment (e.g. ``{"env": {...}}``).
        source: Where workers get the code (default: :meth:`CodeSource.detect`).

    Returns:
        The deployment ids.

    Examples:
        >>> from deployments.definitions import deploy_all
        >>> deploy_all("mlops")  # doctest: +SKIP
    """
    from prefect import deploy

    ids = deploy(*runner_deployments(defs or definitions(), from_source=True, work_pool_name=work_pool_name,
                                     job_variables=job_variables, source=source),
                 work_pool_name=work_pool_name, build=False, push=False, print_next_steps_message=False,
                 ignore_warnings=True)  # else its process-pool hint goes to stdout among the ids
    return [str(i) for i in ids]


def prefect_yaml(defs: list[DeploymentDefinition] | None = None, work_pool_name: str = "mlops",
                 job_variables: dict[str, Any] | None = None, source: CodeSource | None = None) -> dict[str, Any]:
    """Return the ``prefect.yaml`` document for the definitions.

    Args:
        defs: The definitions (default: :func:`definitions`).
        work_pool_name: Work pool every deployment uses (``prefect deploy --all`` ignores ``--pool``).
        job_variables: Work-pool job variables of every deployment.
        source: Where workers get the code (default: :meth:`CodeSource.detect`).

    Returns:
        The document (write it with :func:`write_prefect_yaml`).
    """
    docs = []
    for d in defs or definitions():
        flow = d.load_flow()
        entry: dict[str, Any] = {
            "name": d.name, "description": d.description, "entrypoint": d.entrypoint, "tags": list(d.tags),
            "parameters": _accepted(flow, d.parameters),
            "work_pool": {"name": work_pool_name, "job_variables": dict(job_variables or {})},
        }
        if d.cron:
            entry["schedules"] = [{"cron": d.cron}]
        elif d.interval:
            entry["schedules"] = [{"interval": int(d.interval.total_seconds())}]
        if d.triggers:
            entry["triggers"] = [t.to_yaml() for t in d.triggers]
            for trigger in entry["triggers"]:
                trigger["parameters"] = _accepted(flow, trigger["parameters"])
        docs.append(entry)
    return {
        "name": "prefect-mlops",
        "prefect-version": "3.8.8",
        "build": None,
        "push": None,
        "pull": (source or CodeSource.detect()).pull_steps(),
        "deployments": docs,
    }


def write_prefect_yaml(path: Path | None = None, defs: list[DeploymentDefinition] | None = None,
                       work_pool_name: str = "mlops", job_variables: dict[str, Any] | None = None,
                       source: CodeSource | None = None) -> Path:
    """Write ``prefect.yaml`` (generated: edit the definitions, not the file).

    Args:
        path: Where to write (default: the project root).
        defs: The definitions (default: :func:`definitions`).
        work_pool_name: Work pool every deployment uses.
        job_variables: Work-pool job variables of every deployment.
        source: Where workers get the code (default: :meth:`CodeSource.detect`).

    Returns:
        The path written.

    Examples:
        >>> from deployments.definitions import definitions, write_prefect_yaml
        >>> write_prefect_yaml(work_pool_name="k8s", defs=definitions(parameters={"mlflow_block": "prod"}),
        ...                    job_variables={"env": {"PREFECT_MLOPS_HOME": "/srv/mlops"}})  # doctest: +SKIP
    """
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    path = path or PROJECT_ROOT / "prefect.yaml"
    header = "# Generated by `prefect-mlops write-yaml` from deployments/definitions.py: edit those, not this.\n"
    document = prefect_yaml(defs, work_pool_name, job_variables, source)
    path.write_text(header + yaml.dump(document, Dumper=_NoAliases, sort_keys=False, width=100))
    return path


def wait_for_triggers(deployment_names: list[str], deadline_s: float = 120.0) -> None:
    """Block until the server has the event-trigger automations of these deployments.

    A runner (``prefect-mlops serve``) registers its deployments and their triggers when it
    starts; an event emitted before that starts nothing. Call this before relying on them.

    Args:
        deployment_names: ``flow-name/deployment`` names.
        deadline_s: Seconds to wait at most.

    Raises:
        TimeoutError: If they are not all there by the deadline.
    """
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async def missing() -> list[str]:
        async with get_client() as client:
            automations = await client.read_automations()
            targets = {str(getattr(action, "deployment_id", "")) for a in automations if a.enabled
                       for action in a.actions}
            absent = []
            for name in deployment_names:
                try:
                    deployment = await client.read_deployment_by_name(name)
                except ObjectNotFound:
                    absent.append(name)
                    continue
                if str(deployment.id) not in targets:
                    absent.append(name)
            return absent

    seen = {"absent": list(deployment_names)}

    def absent_now() -> list[str]:
        seen["absent"] = asyncio.run(missing())
        return seen["absent"]

    try:
        wait_until(absent_now, deadline_s, "event triggers", interval=0.5, ignore=(), done=lambda absent: not absent)
    except TimeoutError as exc:
        raise TimeoutError(f"deployments or their triggers not registered after {deadline_s:.0f}s: "
                           f"{seen['absent']}") from exc
