"""A spec to deployment definitions and back: the same deployments as deployments/definitions.py."""

from __future__ import annotations

import datetime as dt

import pytest

from deployments.definitions import PROJECT_ROOT, definitions, prefect_yaml
from deployments.pipeline_spec import PipelineSpec
from deployments.pipeline_spec_deploy import blocks_to_save, flow_accepts, from_definitions, to_definitions
from deployments.pipeline_spec_yaml import dump_spec, validate_text

EXAMPLE = PROJECT_ROOT / "examples" / "mlops-pipeline.yaml"
pytestmark = pytest.mark.no_server


def _accepted(defs: list) -> list:
    """The definitions with only the parameters each flow takes (what every deploy path registers)."""
    import dataclasses

    return [dataclasses.replace(d, parameters={k: v for k, v in d.parameters.items()
                                               if k in flow_accepts(d.entrypoint)}) for d in defs]


def test_the_empty_spec_gives_exactly_the_definitions() -> None:
    spec = validate_text("# nothing: every default\n")
    assert spec == PipelineSpec()
    assert to_definitions(spec) == definitions()
    assert prefect_yaml(to_definitions(spec)) == prefect_yaml(definitions())


@pytest.mark.parametrize("parameters", [{}, {"mlflow_block": "prod-mlflow", "serving_block": "prod-serving",
                                             "dvc_block": "prod-data", "policy_block": "strict"}])
def test_definitions_round_trip_through_a_spec(parameters: dict[str, str]) -> None:
    defs = definitions(cooldown=dt.timedelta(minutes=30), retrain_cron="15 2 * * 1-5", parameters=parameters)
    spec = from_definitions(defs, name="prod")
    assert spec.blocks.mlflow == parameters.get("mlflow_block")
    text = dump_spec(spec)
    assert validate_text(text) == spec
    back = to_definitions(validate_text(text))
    assert back == _accepted(defs)  # names, entrypoints, parameters, schedules, triggers, tags
    assert prefect_yaml(back) == prefect_yaml(defs)


def test_a_deployment_left_out_and_a_new_one() -> None:
    spec = validate_text(
        "deployments:\n  batch-scoring/manual: {enabled: false}\n"
        "  monitor-model/daily:\n    entrypoint: flows/monitor_model.py:monitor_model\n"
        "    schedule: {cron: '0 6 * * *'}\n    parameters: {window_hours: 24}\n")
    names = [(d.entrypoint, d.name) for d in to_definitions(spec)]
    assert ("flows/batch_scoring.py:batch_scoring", "manual") not in names
    assert names[-1] == ("flows/monitor_model.py:monitor_model", "daily")
    exported = from_definitions(to_definitions(spec))
    assert exported.deployments["batch-scoring/manual"].enabled is False
    assert to_definitions(validate_text(dump_spec(exported))) == to_definitions(spec)


def test_the_example_contract_accepts_the_demo_data() -> None:
    from tasks.data_validation import check_frame
    from tasks.sample_data import make_customer_frame

    contract = blocks_to_save(validate_text(EXAMPLE.read_text()))["churn-contract"]
    for day in (0, 7):
        report = check_frame(make_customer_frame(1000, seed=3, day=day), contract)
        assert report.passed, report.violations
