"""The pipeline spec as a whole: the example validates, the JSON Schema is committed and in sync."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from deployments.definitions import PROJECT_ROOT, definitions
from deployments.pipeline_spec_deploy import blocks_to_save, flow_accepts, to_definitions
from deployments.pipeline_spec_yaml import SCHEMA_PATH, schema_text, validate_text

EXAMPLE = PROJECT_ROOT / "examples" / "mlops-pipeline.yaml"
pytestmark = pytest.mark.no_server


def test_the_example_validates_and_names_the_committed_schema() -> None:
    text = EXAMPLE.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert (EXAMPLE.parent / first.split("=", 1)[1]).resolve() == SCHEMA_PATH
    spec = validate_text(text, str(EXAMPLE))
    defs = {f"{d.entrypoint}:{d.name}": d for d in to_definitions(spec)}
    assert len(defs) == len(definitions())
    drift = defs["flows/continuous_training.py:continuous_training:on-drift"]
    assert drift.triggers[0].cooldown == dt.timedelta(minutes=10)
    assert drift.parameters["policy_block"] == "churn-promotion"
    assert drift.parameters["training"]["search_space"] == {"C": [0.1, 1.0]}
    assert defs["flows/monitor_model.py:monitor_model:hourly"].parameters["monitoring_block"] == "churn-monitoring"
    assert all(d.parameters.get("mlflow_block") == "demo-mlflow" for d in defs.values()
               if "mlflow_block" in flow_accepts(d.entrypoint))
    saved = set(blocks_to_save(spec))
    assert {"churn-contract", "churn-monitoring", "churn-promotion"} <= saved
    assert saved == {"churn-contract", "churn-monitoring", "churn-promotion", "churn-rollout"}


def test_committed_schema_is_in_sync_and_accepts_the_example() -> None:
    import jsonschema

    assert SCHEMA_PATH.read_text() == schema_text(), "run `prefect-mlops spec schema --out " \
                                                     "deployments/pipeline.schema.json`"
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(EXAMPLE.read_text()))) == []
    assert [e.message for e in validator.iter_errors({"trainig": {}})] == [
        "Additional properties are not allowed ('trainig' was unexpected)"]
