"""The declarative pipeline spec: one YAML file that says what the loop trains, on what, and when.

A ``mlops-pipeline.yaml`` names the data source, the data contract, the training spec, the
promotion, monitoring and rollout policies, the blocks (MLflow, DVC, serving) and, per
deployment, its schedule, event triggers and parameters. It is described by the pydantic models
below (every model forbids unknown fields, so a typo is an error), validated with file and line
for every error by :mod:`deployments.pipeline_spec_yaml`, and turned into the deployment
definitions of :mod:`deployments.definitions` by :mod:`deployments.pipeline_spec_deploy`.

The policy sections reuse the fields of the blocks they configure (:class:`DataContract`,
:class:`PromotionPolicy`, :class:`MonitoringPolicy`) and the training section is
:class:`TrainingSpec` itself: a field added there appears here and in the JSON Schema.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from blocks.data_contract import ColumnSpec, DataContract
from blocks.monitoring_policy import MonitoringPolicy
from blocks.promotion_policy import PromotionPolicy
from blocks.rollout_policy import RolloutPolicy
from tasks.events import ALL_EVENTS
from tasks.sklearn_training import TrainingSpec

#: Schema of the spec, for editors (``# yaml-language-server: $schema=...``); regenerate with
#: ``prefect-mlops spec schema --out deployments/pipeline.schema.json``.
SCHEMA_FILE = "pipeline.schema.json"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_seconds(value: Any) -> Any:
    """Read a duration: a number of seconds, or a text such as ``"90s"``, ``"5m"``, ``"6h"``, ``"1d"``.

    Args:
        value: The value as written in the spec.

    Returns:
        Seconds (a float) for a duration text, else the value unchanged (pydantic checks it).

    Examples:
        >>> parse_seconds("6h"), parse_seconds(300), parse_seconds("1.5m")
        (21600.0, 300, 90.0)
    """
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


def _plain_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


#: Seconds (> 0), written as a number or as ``"6h"``; written out as a plain number.
Seconds = Annotated[
    float, BeforeValidator(parse_seconds), Field(gt=0), PlainSerializer(_plain_number),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": _DURATION.pattern}],
                    "description": "Seconds, or a duration such as '90s', '5m', '6h', '1d'."}),
]


class StrictModel(BaseModel):
    """Base of every spec model: unknown fields are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


def strict_fields_model(source: type[BaseModel], name: str, doc: str,
                        overrides: dict[str, Any] | None = None) -> type[StrictModel]:
    """Return a strict model with the fields (types, defaults, descriptions) of a block or model.

    The block's own validators are not copied: :func:`deployments.pipeline_spec_yaml.validate_spec`
    builds the real block from the section, so they run too.

    Args:
        source: The block or model whose fields the section takes.
        name: The new model's name (its JSON Schema title).
        doc: Its docstring (the schema's description).
        overrides: Field name -> ``(annotation, FieldInfo)`` replacing the source's.

    Returns:
        The model class.

    Examples:
        >>> Section = strict_fields_model(PromotionPolicy, "PromotionSection", "Promotion policy.")
        >>> Section(min_improvement=0.01).min_improvement
        0.01
    """
    fields: dict[str, Any] = {n: (f.annotation, copy.copy(f)) for n, f in source.model_fields.items()}
    fields.update(overrides or {})
    model = create_model(name, __base__=StrictModel, __doc__=doc, __module__=__name__, **fields)
    return model


ColumnSection = strict_fields_model(ColumnSpec, "ColumnSection", "What one column must hold, and its role.")
ContractSection = strict_fields_model(
    DataContract, "ContractSection",
    "The data contract (fields of the DataContract block), saved as the block named by blocks.contract.",
    overrides={"columns": (dict[str, ColumnSection], Field(..., description="Column name -> what it must hold.")),
               "target": (str | None, Field(default=None, description="Target column (None: data.target)."))})
PromotionSection = strict_fields_model(
    PromotionPolicy, "PromotionSection",
    "The promotion policy (fields of the PromotionPolicy block), saved as the block named by blocks.promotion.")
MonitoringSection = strict_fields_model(
    MonitoringPolicy, "MonitoringSection",
    "The monitoring policy (fields of the MonitoringPolicy block), saved as the block named by blocks.monitoring.")
TrainingSection = strict_fields_model(
    TrainingSpec, "TrainingSection", "What to train and how to split (the fields of TrainingSpec).")


RolloutSection = strict_fields_model(
    RolloutPolicy, "RolloutSection",
    "The staged rollout policy (fields of the RolloutPolicy block: infra-validation load and thresholds on "
    "staging, the approval switch), saved as the block named by blocks.rollout.")


class DataSource(StrictModel):
    """Where the training data comes from.

    ``dvc``: the dataset versioned at ``dataset_path`` in the DVC repository (``blocks.dvc``); new
    data arrives through ``incoming_path`` (watched by ``watch-data``) or a drift-triggered retrain.
    ``file``: every training run versions ``file`` first, then trains on it (so a drift-triggered
    retrain also trains on the file, not on the labelled traffic of the window that drifted).
    """

    source: Literal["dvc", "file"] = Field(default="dvc", description="dvc (the versioned dataset) or file "
                        "(a file versioned before every training run).")
    file: str | None = Field(default=None, description="With source file: the CSV / Parquet / JSON Lines file.")
    dataset_path: str | None = Field(default=None, description="Path of the dataset in the data repository "
                                     "(None: the flows' default, data/train.parquet).")
    target: str | None = Field(default=None, description="Target column (None: the flows' default).")
    incoming_path: str | None = Field(default=None, description="File or folder watch-data watches for new data "
                                      "(None: the flow's default).")

    @model_validator(mode="after")
    def _file_with_file_source(self) -> DataSource:
        if self.source == "file" and not self.file:
            raise ValueError("source 'file' needs 'file': the path of the data file")
        if self.source == "dvc" and self.file:
            raise ValueError("'file' is only read with source 'file'; remove it or set source: file")
        return self


class BlockNames(StrictModel):
    """Names of saved Prefect blocks the deployments use (None: the embedded default of each).

    A policy section written inline (``contract``, ``promotion``, ``monitoring``) is saved as the
    block named here when the spec is deployed (default ``<name>-contract`` and so on).
    """

    mlflow: str | None = Field(default=None, description="MlflowServer block.")
    dvc: str | None = Field(default=None, description="DvcRepository block.")
    serving: str | None = Field(default=None, description="BentoMLServing block.")
    contract: str | None = Field(default=None, description="DataContract block.")
    promotion: str | None = Field(default=None, description="PromotionPolicy block.")
    monitoring: str | None = Field(default=None, description="MonitoringPolicy block.")
    rollout: str | None = Field(default=None, description="RolloutPolicy block (rollout-model's policy).")
    staging: str | None = Field(default=None, description="BentoMLServing block of the staging endpoint "
                                "(rollout-model).")
    production: str | None = Field(default=None, description="BentoMLServing block of the production endpoint "
                                   "(rollout-model).")


class Schedule(StrictModel):
    """A deployment's schedule: a cron expression or an interval, exactly one."""

    cron: str | None = Field(default=None, description="Cron expression, e.g. '0 3 * * *' (UTC).")
    interval: Seconds | None = Field(default=None, description="Seconds between runs (or '5m', '1h').")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        from prefect._internal.schemas.validators import validate_cron_string

        return None if value is None else validate_cron_string(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of 'cron' and 'interval'")
        return self


class TriggerSpec(StrictModel):
    """Start the deployment when one of ``events`` arrives for a model (once per model per cool-down).

    The run gets the model's name and the event (``trigger``) as parameters, plus ``parameters``
    (Prefect templates over the event, such as ``{{ event.payload.window.start }}``).
    """

    events: list[str] = Field(..., min_length=1, description="Event names (tasks/events.py), any of which starts "
                              "a run.")
    cooldown: Seconds = Field(..., description="Shortest time between two runs for one model (the trigger's "
                              "'within').")
    match: dict[str, str] = Field(default_factory=dict, description="Resource labels the event must carry besides "
                                  "the model id, e.g. {'mlops.origin': 'data-watch'}.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Further run parameters, templates over "
                                       "the event.")

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: list[str]) -> list[str]:
        unknown = [e for e in events if e.startswith("mlops.") and e not in ALL_EVENTS]
        if unknown:
            raise ValueError(f"unknown prefect-mlops event(s) {unknown}; the events are {list(ALL_EVENTS)}")
        return events


class DeploymentSpec(StrictModel):
    """One deployment.

    Under a built-in key (``continuous-training/scheduled``) every field written replaces the
    built-in one; a new key needs ``entrypoint``.
    """

    entrypoint: str | None = Field(default=None, description="path/to/file.py:flow_function (built-in keys: "
                                   "theirs).")
    description: str | None = Field(default=None, description="What the deployment does.")
    enabled: bool = Field(default=True, description="false: leave this deployment out.")
    schedule: Schedule | None = Field(default=None, description="Cron or interval schedule (None: none).")
    triggers: list[TriggerSpec] = Field(default_factory=list, description="Event triggers.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Default parameters of the flow "
                                       "(over the pipeline-wide ones).")
    tags: list[str] = Field(default_factory=lambda: ["prefect-mlops"], description="Deployment tags.")

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_form(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w./-]+\.py:\w+", value):
            raise ValueError("an entrypoint is 'path/to/file.py:flow_function'")
        return value


class PipelineSpec(StrictModel):
    """A whole continuous-training pipeline: data, contract, training, policies, blocks, deployments.

    Every section is optional: the empty spec gives exactly the built-in deployments of
    :func:`deployments.definitions.definitions`. Pipeline-wide values (model name, data, training,
    block names) become the default parameters of every deployment whose flow takes them.

    Examples:
        >>> hourly = {"monitor-model/hourly": {"schedule": {"interval": "2h"}}}
        >>> spec = PipelineSpec.model_validate({"model_name": "churn", "training": {"params": {"C": 0.5}},
        ...                                     "deployments": hourly})
        >>> spec.deployments["monitor-model/hourly"].schedule.interval
        7200.0
        >>> PipelineSpec.model_validate({"trainig": {}})  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        pydantic_core._pydantic_core.ValidationError: trainig: Extra inputs are not permitted
    """

    model_config = ConfigDict(extra="forbid", title="prefect-mlops pipeline spec")

    name: str = Field(default="prefect-mlops", pattern=r"^[a-z0-9][a-z0-9-]*$", description="Pipeline name "
                      "(kebab-case; prefix of the blocks saved from inline sections).")
    model_name: str | None = Field(default=None, description="Registered model name (None: the flows' default).")
    blocks: BlockNames = Field(default_factory=BlockNames, description="Names of saved blocks.")
    data: DataSource = Field(default_factory=DataSource, description="Where the training data comes from.")
    contract: ContractSection | None = Field(default=None, description="Data contract (None: the blocks.contract "
                                             "block, else the one inferred from the model's first dataset).")
    training: TrainingSection | None = Field(default=None, description="Training spec (None: the defaults by "
                                             "task type).")
    promotion: PromotionSection | None = Field(default=None, description="Promotion policy (None: the "
                                               "blocks.promotion block, else the default policy).")
    monitoring: MonitoringSection | None = Field(default=None, description="Monitoring policy (None: the "
                                                 "blocks.monitoring block, else the default policy).")
    rollout: RolloutSection | None = Field(default=None, description="Staged rollout policy.")
    work_pool: str | None = Field(default=None, description="Work pool of `prefect-mlops spec deploy` when none "
                                  "is given.")
    deployments: dict[str, DeploymentSpec] = Field(
        default_factory=dict, description="Deployment 'flow-name/deployment-name' -> its schedule, triggers and "
        "parameters (built-in ones: only what changes).")

    @field_validator("deployments")
    @classmethod
    def _keys(cls, value: dict[str, DeploymentSpec]) -> dict[str, DeploymentSpec]:
        bad = [key for key in value if not re.fullmatch(r"[\w-]+/[\w.-]+", key)]
        if bad:
            raise ValueError(f"deployment keys are 'flow-name/deployment-name', got {bad}")
        return value

    def block_name(self, kind: str) -> str | None:
        """Return the block name a deployment receives for ``kind`` (``contract``, ``promotion`` ...).

        An inline section is saved under ``blocks.<kind>``, else under ``<name>-<kind>``.

        Examples:
            >>> PipelineSpec(name="churn", promotion={}).block_name("promotion")
            'churn-promotion'
            >>> PipelineSpec().block_name("promotion") is None
            True
        """
        named = getattr(self.blocks, kind)
        if named is None and getattr(self, kind, None) is not None:
            return f"{self.name}-{kind}"
        return named
