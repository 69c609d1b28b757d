"""A pipeline spec to deployment definitions and back; saving its inline blocks; deploying it.

:func:`to_definitions` gives the same :class:`DeploymentDefinition` objects as
:func:`deployments.definitions.definitions` (the empty spec gives exactly those), so a spec serves,
deploys and writes ``prefect.yaml`` through the one existing code path. :func:`from_definitions`
writes definitions back out as a spec (pipeline-wide values lifted out of the deployments), and
:func:`from_server` does the same for the deployments registered on a Prefect server.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from deployments.definitions import DeploymentDefinition, EventTrigger, definitions, runner_deployments
from deployments.pipeline_spec import DeploymentSpec, PipelineSpec, Schedule, TrainingSection, TriggerSpec

#: Spec value -> the flow parameter it becomes, for every flow that takes that parameter.
SHARED_PARAMETERS: dict[tuple[str, ...], str] = {
    ("model_name",): "model_name", ("data", "file"): "data_file", ("data", "dataset_path"): "dataset_path",
    ("data", "target"): "target", ("data", "incoming_path"): "incoming_path", ("training",): "training",
    ("blocks", "mlflow"): "mlflow_block", ("blocks", "dvc"): "dvc_block", ("blocks", "serving"): "serving_block",
    ("blocks", "contract"): "contract_block", ("blocks", "promotion"): "policy_block",
    ("blocks", "monitoring"): "monitoring_block", ("blocks", "rollout"): "policy",
    ("blocks", "staging"): "staging_block", ("blocks", "production"): "production_block",
}
#: Parameters that mean this only in these flows (batch-scoring's data_file is what it scores).
ONLY_FLOWS = {"data_file": {"continuous-training"}, "policy": {"rollout-model"}}


@functools.cache
def load_flow(entrypoint: str) -> Any:
    """Import a flow from its entrypoint, once per process."""
    return DeploymentDefinition(entrypoint, "", "").load_flow()


def flow_accepts(entrypoint: str) -> set[str]:
    """Return the parameter names of the flow at ``entrypoint``."""
    return set(load_flow(entrypoint).parameters.properties)


def definition_key(definition: DeploymentDefinition) -> str:
    """Return ``flow-name/deployment-name``, how Prefect addresses a deployment."""
    return f"{load_flow(definition.entrypoint).name}/{definition.name}"


def builtin_definitions() -> dict[str, DeploymentDefinition]:
    """Return the built-in definitions by ``flow-name/deployment-name``."""
    return {definition_key(d): d for d in definitions()}


def _value(spec: PipelineSpec, path: tuple[str, ...]) -> Any:
    if path == ("training",):
        return None if spec.training is None else spec.training.model_dump(mode="json", exclude_unset=True)
    if path[0] == "blocks":
        return spec.block_name(path[1])
    value: Any = spec
    for part in path:
        value = getattr(value, part)
    return value


def shared_parameters(spec: PipelineSpec, entrypoint: str) -> dict[str, Any]:
    """Return the pipeline-wide parameters the flow at ``entrypoint`` takes (unset values left out).

    Examples:
        >>> spec = PipelineSpec(model_name="churn", blocks={"serving": "prod"})
        >>> shared_parameters(spec, "flows/deploy_model.py:watch_serving")
        {'serving_block': 'prod'}
    """
    accepted, flow_name = flow_accepts(entrypoint), load_flow(entrypoint).name
    shared = {}
    for path, name in SHARED_PARAMETERS.items():
        value = _value(spec, path)
        if value is not None and name in accepted and flow_name in ONLY_FLOWS.get(name, {flow_name}):
            shared[name] = value
    return shared


def _schedule(schedule: Schedule | None) -> dict[str, Any]:
    if schedule is None:
        return {"cron": None, "interval": None}
    interval = None if schedule.interval is None else dt.timedelta(seconds=schedule.interval)
    return {"cron": schedule.cron, "interval": interval}


def _trigger(trigger: TriggerSpec) -> EventTrigger:
    return EventTrigger(tuple(trigger.events), dt.timedelta(seconds=trigger.cooldown), dict(trigger.match),
                        dict(trigger.parameters))


def _merged(key: str, written: DeploymentSpec, builtin: DeploymentDefinition | None) -> DeploymentDefinition:
    """Return the definition of ``key``: the built-in one with every field written replaced."""
    given = written.model_fields_set
    if builtin is None:
        if written.entrypoint is None:
            raise ValueError(f"{key} is no built-in deployment: give its entrypoint")
        builtin = DeploymentDefinition(written.entrypoint, key.split("/", 1)[1], written.description or "")
    changes: dict[str, Any] = {}
    if "description" in given:
        changes["description"] = written.description or ""
    if "schedule" in given:
        changes.update(_schedule(written.schedule))
    if "triggers" in given:
        changes["triggers"] = tuple(_trigger(t) for t in written.triggers)
    if "parameters" in given:
        changes["parameters"] = dict(written.parameters)
    if "tags" in given:
        changes["tags"] = tuple(written.tags)
    return _replace(builtin, changes)


def _replace(definition: DeploymentDefinition, changes: dict[str, Any]) -> DeploymentDefinition:
    import dataclasses

    return dataclasses.replace(definition, **changes)


def to_definitions(spec: PipelineSpec) -> list[DeploymentDefinition]:
    """Return the deployment definitions of a spec: the built-in ones, changed and extended by it.

    Each deployment's parameters are the pipeline-wide ones its flow takes, under its own.

    Args:
        spec: A validated spec.

    Returns:
        The definitions (built-in order, then the spec's new deployments in its order).

    Raises:
        ValueError: A new deployment without an entrypoint.

    Examples:
        >>> to_definitions(PipelineSpec()) == definitions()
        True
        >>> spec = PipelineSpec(deployments={"monitor-model/hourly": {"schedule": {"cron": "*/10 * * * *"}}})
        >>> [d.cron for d in to_definitions(spec) if d.name == "hourly"]
        ['*/10 * * * *']
    """
    builtins = builtin_definitions()
    keys = [*builtins, *(k for k in spec.deployments if k not in builtins)]
    result = []
    for key in keys:
        written = spec.deployments.get(key)
        if written is not None and not written.enabled:
            continue
        definition = builtins.get(key) if written is None else _merged(key, written, builtins.get(key))
        assert definition is not None
        accepted = flow_accepts(definition.entrypoint)
        parameters = {**shared_parameters(spec, definition.entrypoint), **definition.parameters}
        result.append(_replace(definition, {"parameters": {k: v for k, v in parameters.items() if k in accepted}}))
    return result


def _deployment_spec(definition: DeploymentDefinition, lifted: dict[str, Any]) -> DeploymentSpec:
    schedule = None
    if definition.cron:
        schedule = Schedule(cron=definition.cron)
    elif definition.interval:
        schedule = Schedule(interval=definition.interval.total_seconds())
    accepted = flow_accepts(definition.entrypoint)
    parameters = {k: v for k, v in definition.parameters.items() if k in accepted and k not in lifted}
    triggers = [TriggerSpec(events=list(t.events), cooldown=t.cooldown.total_seconds(), match=dict(t.labels),
                            parameters=dict(t.parameters)) for t in definition.triggers]
    return DeploymentSpec(entrypoint=definition.entrypoint, description=definition.description, schedule=schedule,
                          triggers=triggers, parameters=parameters, tags=list(definition.tags))


def _lift(defs: list[DeploymentDefinition]) -> dict[str, Any]:
    """Return the parameters every deployment whose flow takes them has with one same value."""
    lifted = {}
    for name in SHARED_PARAMETERS.values():
        takers = [d for d in defs if name in flow_accepts(d.entrypoint)
                  and load_flow(d.entrypoint).name in ONLY_FLOWS.get(name, {load_flow(d.entrypoint).name})]
        values = [d.parameters.get(name) for d in takers]
        if takers and values[0] is not None and all(v == values[0] for v in values):
            lifted[name] = values[0]
    return lifted


def from_definitions(defs: list[DeploymentDefinition], name: str = "prefect-mlops") -> PipelineSpec:
    """Write deployment definitions out as a spec (the inverse of :func:`to_definitions`).

    A parameter that every deployment whose flow takes it has with the same value becomes a
    pipeline-wide value (``mlflow_block`` -> ``blocks.mlflow``); every deployment is written whole,
    and a built-in one missing from ``defs`` as ``enabled: false``.

    Args:
        defs: The definitions (e.g. :func:`deployments.definitions.definitions`).
        name: The pipeline's name.

    Returns:
        The spec; ``to_definitions(from_definitions(defs))`` gives ``defs`` again (parameters
        limited to those each flow takes).

    Examples:
        >>> spec = from_definitions(definitions(parameters={"mlflow_block": "prod-mlflow"}))
        >>> spec.blocks.mlflow, spec.deployments["monitor-model/hourly"].schedule.interval
        ('prod-mlflow', 3600.0)
    """
    lifted = _lift(defs)
    reverse = {param: path for path, param in SHARED_PARAMETERS.items()}
    top: dict[str, Any] = {"name": name}
    for param, value in lifted.items():
        path = reverse[param]
        if path == ("training",):
            value = TrainingSection.model_validate(value)
        section = top.setdefault(path[0], {}) if len(path) == 2 else top
        section[path[-1]] = value
    if "file" in top.get("data", {}):
        top["data"]["source"] = "file"
    deployments = {definition_key(d): _deployment_spec(d, lifted) for d in defs}
    for key in builtin_definitions():
        deployments.setdefault(key, DeploymentSpec(enabled=False))
    return PipelineSpec.model_validate({**top, "deployments": deployments})


def blocks_to_save(spec: PipelineSpec) -> dict[str, Any]:
    """Return the blocks of the spec's inline sections, by the name the deployments receive.

    Examples:
        >>> blocks = blocks_to_save(PipelineSpec(name="churn", promotion={"min_improvement": 0.01}))
        >>> {name: type(block).__name__ for name, block in blocks.items()}
        {'churn-promotion': 'PromotionPolicy'}
    """
    from blocks.data_contract import DataContract
    from blocks.monitoring_policy import MonitoringPolicy
    from blocks.promotion_policy import PromotionPolicy
    from blocks.rollout_policy import RolloutPolicy

    blocks: dict[str, Any] = {}
    if spec.contract is not None:
        fields = spec.contract.model_dump(exclude_unset=True)
        fields["target"] = spec.contract.target or spec.data.target
        blocks[str(spec.block_name("contract"))] = DataContract(**fields)
    if spec.promotion is not None:
        blocks[str(spec.block_name("promotion"))] = PromotionPolicy(**spec.promotion.model_dump(exclude_unset=True))
    if spec.monitoring is not None:
        blocks[str(spec.block_name("monitoring"))] = MonitoringPolicy(**spec.monitoring.model_dump(
            exclude_unset=True))
    if spec.rollout is not None:
        blocks[str(spec.block_name("rollout"))] = RolloutPolicy(**spec.rollout.model_dump(exclude_unset=True))
    return blocks


def deploy_spec(spec: PipelineSpec, work_pool_name: str) -> list[str]:
    """Save the spec's inline blocks, then register its deployments with a work pool.

    Args:
        spec: A validated spec.
        work_pool_name: An existing work pool of the current Prefect server.

    Returns:
        The deployment ids.

    Examples:
        >>> from deployments.pipeline_spec_yaml import load_spec
        >>> deploy_spec(load_spec("examples/mlops-pipeline.yaml"), "mlops")  # doctest: +SKIP
    """
    from deployments.definitions import deploy_all

    for name, block in blocks_to_save(spec).items():
        block.save(name, overwrite=True)
    return deploy_all(work_pool_name, to_definitions(spec))


def runner_deployments_of(spec: PipelineSpec) -> list[Any]:
    """Return the spec's deployments as Prefect ``RunnerDeployment`` objects (for ``prefect.serve``)."""
    return runner_deployments(to_definitions(spec))
