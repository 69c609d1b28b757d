"""Checks of a pipeline spec beyond its structure: what would otherwise fail at deploy or run time.

Each check returns ``(location, message)`` pairs, the location being the path of the field in
the spec, so :func:`deployments.pipeline_spec_yaml.validate_text` can name its line:

* the inline blocks are built for real (their own validators run: drift method names, ranges);
* the training estimator imports and every parameter and search-space value meets the
  estimator's own constraints (scikit-learn's ``_parameter_constraints``);
* every deployment key is built-in or has an entrypoint, and its parameters and trigger
  parameters are ones its flow takes, of the flow's types.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from deployments.pipeline_spec import PipelineSpec

Issue = tuple[tuple[Any, ...], str]


def _pydantic_issues(exc: ValidationError, prefix: tuple[Any, ...], names: list[str] | None = None) -> list[Issue]:
    from deployments.pipeline_spec_yaml import _message

    return [((*prefix, *e["loc"]), _message(e, names)) for e in exc.errors()]


def block_issues(spec: PipelineSpec) -> list[Issue]:
    """Build each inline block (contract, promotion, monitoring) and return what its validators refuse.

    Examples:
        >>> block_issues(PipelineSpec(monitoring={"numerical_method": "kss"}))[0][0]
        ('monitoring',)
    """
    from deployments.pipeline_spec_deploy import blocks_to_save

    issues: list[Issue] = []
    if spec.contract is not None:
        target = spec.contract.target or spec.data.target
        if target is None:
            issues.append((("contract", "target"), "give the target column here or in data.target"))
        elif spec.data.target and spec.contract.target and spec.contract.target != spec.data.target:
            issues.append((("contract", "target"), f"{spec.contract.target!r} differs from data.target "
                                                   f"{spec.data.target!r}"))
        elif target not in spec.contract.columns:
            issues.append((("contract", "columns"), f"the target {target!r} is not among the columns"))
        if issues:
            return issues
    for section in ("contract", "promotion", "monitoring"):
        if getattr(spec, section) is None:
            continue
        try:
            blocks_to_save(spec.model_copy(update={k: None for k in ("contract", "promotion", "monitoring")
                                                   if k != section}))
        except ValidationError as exc:
            issues += _pydantic_issues(exc, (section,))
    return issues


def _parameter_issue(estimator: type, name: str, value: Any) -> str | None:
    """Return why ``name=value`` is not a valid parameter of a scikit-learn estimator, or None."""
    if not hasattr(estimator, "get_params"):
        return None  # a factory: its parameters are checked when the trials are expanded
    valid = set(inspect.signature(estimator.__init__).parameters) - {"self"}
    if name not in valid and not any(p.kind is p.VAR_KEYWORD for p in
                                     inspect.signature(estimator.__init__).parameters.values()):
        import difflib

        close = difflib.get_close_matches(name, sorted(valid), n=1)
        return f"{estimator.__name__} has no parameter {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    constraints = getattr(estimator, "_parameter_constraints", {})
    if name not in constraints:
        return None
    try:
        from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints
    except ImportError:  # pragma: no cover - scikit-learn without its parameter validation
        return None
    try:
        validate_parameter_constraints({name: constraints[name]}, {name: value}, caller_name=estimator.__name__)
    except InvalidParameterError as exc:
        return str(exc)
    return None


def training_issues(spec: PipelineSpec) -> list[Issue]:
    """Check the estimator path and each of its parameters and candidate values.

    Examples:
        >>> training_issues(PipelineSpec(training={"params": {"C": "high"}}))[0][0]
        ('training', 'params', 'C')
    """
    if spec.training is None:
        return []
    from tasks.exceptions import TrainingConfigError
    from tasks.sklearn_spec import import_estimator
    from tasks.sklearn_training import TrainingSpec

    training = TrainingSpec(**spec.training.model_dump(exclude_unset=True))
    kind = "regression" if training.task_type == "regression" else "binary"
    resolved = training.resolved(kind)
    try:
        estimator = import_estimator(str(resolved.estimator))
    except TrainingConfigError as exc:
        return [(("training", "estimator"), str(exc))]
    issues: list[Issue] = []
    for name, value in (training.params or {}).items():
        if (problem := _parameter_issue(estimator, name, value)) is not None:
            issues.append((("training", "params", name), problem))
    for name, values in (training.search_space or {}).items():
        if not values:
            issues.append((("training", "search_space", name), "give at least one candidate value"))
        for index, value in enumerate(values):
            if (problem := _parameter_issue(estimator, name, value)) is not None:
                issues.append((("training", "search_space", name, index), problem))
                break
    return issues


@functools.cache
def parameters_model(entrypoint: str) -> type[BaseModel]:
    """Return a strict pydantic model of a flow's parameters (names, types, defaults from its signature)."""
    from deployments.pipeline_spec_deploy import load_flow

    fn = load_flow(entrypoint).fn
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: check names only
        hints = {}
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        default = None if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (hints.get(name, Any), default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{fn.__name__}_parameters", __config__=config, **fields)


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def deployment_issues(spec: PipelineSpec) -> list[Issue]:
    """Check each written deployment: known or with an entrypoint, parameters its flow takes.

    Examples:
        >>> issues = deployment_issues(PipelineSpec(deployments={"monitor-model/hourly": {"parameters": {"wnd": 2}}}))
        >>> issues[0][0]
        ('deployments', 'monitor-model/hourly', 'parameters', 'wnd')
    """
    from deployments.pipeline_spec_deploy import builtin_definitions, load_flow

    builtins = builtin_definitions()
    issues: list[Issue] = []
    for key, written in spec.deployments.items():
        here: tuple[Any, ...] = ("deployments", key)
        builtin = builtins.get(key)
        entrypoint = written.entrypoint or (builtin.entrypoint if builtin else None)
        if entrypoint is None:
            issues.append(((*here, "entrypoint"), f"{key!r} is no built-in deployment ({', '.join(builtins)}): "
                                                   "give its entrypoint"))
            continue
        if builtin is not None and written.entrypoint not in (None, builtin.entrypoint):
            issues.append(((*here, "entrypoint"), f"the built-in {key!r} runs {builtin.entrypoint}; use another "
                                                   "key for another flow"))
            continue
        try:
            flow_name = load_flow(entrypoint).name
        except Exception as exc:  # noqa: BLE001 - a missing file or function: reported, not raised
            issues.append(((*here, "entrypoint"), f"cannot load the flow: {exc}"))
            continue
        if key.split("/", 1)[0] != flow_name:
            issues.append(((*here,), f"the flow at {entrypoint} is named {flow_name!r}: the key must start with "
                                     f"'{flow_name}/'"))
        model = parameters_model(entrypoint)
        plain = {k: v for k, v in written.parameters.items() if not _is_template(v)}
        try:
            model.model_validate(plain)
        except ValidationError as exc:
            issues += _pydantic_issues(exc, (*here, "parameters"), sorted(model.model_fields))
        for index, trigger in enumerate(written.triggers):
            for name in trigger.parameters:
                if name not in model.model_fields:
                    issues.append(((*here, "triggers", index, "parameters", name),
                                   f"{flow_name} takes no parameter {name!r}"))
    return issues


def spec_issues(spec: PipelineSpec) -> list[Issue]:
    """Return every problem of a structurally valid spec (blocks, training, deployments).

    Examples:
        >>> spec_issues(PipelineSpec())
        []
    """
    return [*block_issues(spec), *training_issues(spec), *deployment_issues(spec)]
