"""Read, validate and write pipeline specs as YAML, with the file and line of every error.

Validation reports every problem at once, one line each, in the form editors and CI logs link::

    mlops-pipeline.yaml:14: training.params.C: The 'C' parameter of LogisticRegression must be a float ...

Lines come from PyYAML's node marks (``yaml.compose``): each pydantic error location is walked
down the node tree to the key it names (for a missing field: the mapping that lacks it).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.pipeline_spec import SCHEMA_FILE, PipelineSpec
from tasks.exceptions import MlopsError

SCHEMA_PATH = Path(__file__).resolve().parent / SCHEMA_FILE


@dataclass(frozen=True)
class SpecIssue:
    """One problem of a spec: where (file, line, field path) and what."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path or '(top level)'}: {self.message}"


class PipelineSpecError(MlopsError):
    """A pipeline spec that does not validate; ``issues`` holds every problem, each with its line."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.line, i.path))
        count = f"{len(self.issues)} error{'s' * (len(self.issues) != 1)}"
        super().__init__(f"invalid pipeline spec ({count}):\n" + "\n".join(map(str, self.issues)))


def _duplicate_keys(node: Any, found: list[tuple[int, str]], path: tuple = ()) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if key.value in seen:
                found.append((key.start_mark.line + 1, ".".join(map(str, (*path, key.value)))))
            seen.add(key.value)
            _duplicate_keys(value, found, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(item, found, (*path, index))


def line_of(root: Any, loc: tuple[Any, ...]) -> int:
    r"""Return the 1-based line of the YAML key (or list item) a location names.

    Walks as deep as the document goes: a missing field gives the line of the mapping that lacks it.

    Examples:
        >>> import yaml
        >>> line_of(yaml.compose("a: 1\nb:\n  c: [1, 2]\n"), ("b", "c", 1))
        3
        >>> line_of(yaml.compose("a: 1\nb:\n  c: 2\n"), ("b", "missing"))
        2
    """
    import yaml

    node, line = root, root.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                break
            line, node = match[-1][0].start_mark.line, match[-1][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


def _field_names() -> list[str]:
    """Every field name of the spec's models (for "did you mean" hints)."""
    names: set[str] = set()
    for model in json.loads(schema_text()).get("$defs", {}).values():
        names.update(model.get("properties", {}))
    names.update(PipelineSpec.model_fields)
    return sorted(names)


def _message(error: Any, candidates: list[str] | None = None) -> str:
    """Return a pydantic error's message; an unknown field gets the closest known name as a hint."""
    msg = str(error["msg"])
    if error["type"] == "extra_forbidden":
        names = _field_names() if candidates is None else candidates
        close = difflib.get_close_matches(str(error["loc"][-1]), names, n=1)
        what = "unknown field" if candidates is None else "unknown parameter"
        return what + (f" (did you mean {close[0]!r}?)" if close else "")
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _path(loc: tuple[Any, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def validate_text(text: str, file: str = "<spec>") -> PipelineSpec:
    r"""Validate a spec's YAML text: its structure, types, the blocks it defines and its deployments.

    Args:
        text: The YAML document.
        file: Its name, for the messages.

    Returns:
        The spec.

    Raises:
        PipelineSpecError: With every problem found, each naming file, line and field.

    Examples:
        >>> validate_text("model_name: churn\n").model_name
        'churn'
        >>> validate_text("model_name: churn\ntrainig: {}\n", "p.yaml")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        deployments.pipeline_spec_yaml.PipelineSpecError: invalid pipeline spec (1 error):
        p.yaml:2: trainig: unknown field (did you mean 'training'?)
    """
    import yaml
    from pydantic import ValidationError

    from deployments.pipeline_spec_checks import spec_issues

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise PipelineSpecError([SpecIssue(file, line, "", f"YAML syntax error: {problem}")]) from exc
    if root is None:
        data, root = {}, yaml.compose("{}")
    if not isinstance(data, dict):
        raise PipelineSpecError([SpecIssue(file, line_of(root, ()), "", "a pipeline spec is a mapping of sections "
                                                                         "(name, data, training, deployments ...)")])
    duplicates: list[tuple[int, str]] = []
    _duplicate_keys(root, duplicates)
    issues = [SpecIssue(file, line, path, "duplicate key (the later one would silently win)")
              for line, path in duplicates]
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        issues += [SpecIssue(file, line_of(root, e["loc"]), _path(e["loc"]), _message(e)) for e in exc.errors()]
        spec = _valid_rest(data, exc)  # so the checks below also report on the sections that did validate
    if spec is not None:
        issues += [SpecIssue(file, line_of(root, loc), _path(loc), message) for loc, message in spec_issues(spec)]
    if issues:
        raise PipelineSpecError(issues)
    assert spec is not None
    return spec


def _valid_rest(data: dict[str, Any], exc: Any) -> PipelineSpec | None:
    """Return the spec without the sections (or deployments) that failed, or None if that fails too."""
    from pydantic import ValidationError

    rest = {**data, "deployments": dict(data.get("deployments") or {})} if isinstance(
        data.get("deployments"), dict) else dict(data)
    for error in exc.errors():
        loc = error["loc"]
        if len(loc) > 1 and loc[0] == "deployments" and isinstance(rest.get("deployments"), dict):
            rest["deployments"].pop(loc[1], None)
        else:
            rest.pop(loc[0], None) if loc else rest.clear()
    try:
        return PipelineSpec.model_validate(rest)
    except ValidationError:
        return None


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate a spec file.

    Args:
        path: The YAML file.

    Returns:
        The spec.

    Raises:
        PipelineSpecError: With every problem found (file, line, field).

    Examples:
        >>> load_spec("examples/mlops-pipeline.yaml").name  # doctest: +SKIP
        'churn'
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PipelineSpecError([SpecIssue(str(path), 0, "", f"cannot read the spec: {exc.strerror}")]) from exc
    return validate_text(text, str(path))


def dump_spec(spec: PipelineSpec, schema: str | None = None) -> str:
    """Write a spec as YAML (only what it sets), headed by the editor's schema line.

    Args:
        spec: The spec.
        schema: Path or URL of the JSON Schema for the ``yaml-language-server`` line (None: no line).

    Returns:
        The YAML text; :func:`validate_text` of it equals ``spec``.

    Examples:
        >>> print(dump_spec(PipelineSpec(model_name="churn")), end="")
        model_name: churn
    """
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    body = yaml.dump(spec.model_dump(mode="json", exclude_unset=True), Dumper=_Dumper, sort_keys=False, width=110,
                     allow_unicode=True)
    header = f"# yaml-language-server: $schema={schema}\n" if schema else ""
    return header + ("" if body.strip() == "{}" else body)


def schema_text() -> str:
    """Return the spec's JSON Schema (from the pydantic models) as committed in ``pipeline.schema.json``."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **PipelineSpec.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_schema(path: str | Path = SCHEMA_PATH) -> Path:
    """Write the JSON Schema file.

    Examples:
        >>> write_schema()  # doctest: +SKIP
        PosixPath('.../deployments/pipeline.schema.json')
    """
    path = Path(path)
    path.write_text(schema_text())
    return path
