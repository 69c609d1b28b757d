"""Spec validation from YAML: every error names its file, line and field; YAML round trips."""

from __future__ import annotations

import pytest

from deployments.definitions import PROJECT_ROOT
from deployments.pipeline_spec_deploy import to_definitions
from deployments.pipeline_spec_yaml import PipelineSpecError, dump_spec, validate_text

EXAMPLE = PROJECT_ROOT / "examples" / "mlops-pipeline.yaml"
pytestmark = pytest.mark.no_server


def _errors(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(PipelineSpecError) as caught:
        validate_text(text, "p.yaml")
    assert all(str(issue).startswith(f"p.yaml:{issue.line}: ") for issue in caught.value.issues)
    return [(i.line, i.path, i.message) for i in caught.value.issues]


MALFORMED = {
    "wrong type": (
        "name: churn\ntraining:\n  n_trials: many\n  test_size: [0.2]\n",
        [(3, "training.n_trials", "valid integer"), (4, "training.test_size", "valid number")]),
    "unknown field with a typo": (
        "name: churn\ntrainig:\n  seed: 1\npromotion:\n  min_improvment: 0.01\n",
        [(2, "trainig", "unknown field (did you mean 'training'?)"),
         (5, "promotion.min_improvment", "did you mean 'min_improvement'?")]),
    "bad cron": (
        "deployments:\n  continuous-training/scheduled:\n    schedule:\n      cron: '0 3 * *'\n",
        [(4, "deployments.continuous-training/scheduled.schedule.cron", 'Invalid cron string: "0 3 * *"')]),
    "missing required": (
        "deployments:\n  monitor-model/hourly:\n    triggers:\n      - events: [mlops.model.promoted]\n"
        "contract:\n  target: churned\n",
        [(4, "deployments.monitor-model/hourly.triggers[0].cooldown", "Field required"),
         (5, "contract.columns", "Field required")]),
    "schedule with both forms": (
        "deployments:\n  watch-data/watch:\n    schedule: {cron: '* * * * *', interval: 5m}\n",
        [(3, "deployments.watch-data/watch.schedule", "exactly one of 'cron' and 'interval'")]),
    "unknown event": (
        "deployments:\n  deploy-model/on-promotion:\n    triggers:\n      - events: [mlops.model.promote]\n"
        "        cooldown: 1\n",
        [(4, "deployments.deploy-model/on-promotion.triggers[0].events", "unknown prefect-mlops event")]),
    "estimator parameters": (
        "training:\n  params:\n    C: high\n    max_itr: 10\n  search_space:\n    C: [1.0, -1]\n",
        [(3, "training.params.C", "must be a float in the range (0.0, inf]. Got 'high'"),
         (4, "training.params.max_itr", "no parameter 'max_itr' (did you mean 'max_iter'?)"),
         (6, "training.search_space.C[1]", "Got -1 instead")]),
    "block validators": (
        "monitoring:\n  drift_share: 0.5\n  numerical_method: kss\n",
        [(1, "monitoring", "Unknown drift method(s) {'numerical_method': 'kss'}")]),
    "flow parameters": (
        "deployments:\n  monitor-model/hourly:\n    parameters:\n      window: 2\n      window_hours: lots\n"
        "  my-flow/nightly:\n    schedule: {interval: 1d}\n",
        [(4, "deployments.monitor-model/hourly.parameters.window", "unknown parameter (did you mean"),
         (5, "deployments.monitor-model/hourly.parameters.window_hours", "valid number"),
         (6, "deployments.my-flow/nightly.entrypoint", "no built-in deployment")]),
    "yaml syntax": ("name: churn\ntraining: [\n", [(3, "", "YAML syntax error")]),
    "duplicate key": ("name: a\nmodel_name: x\nname: b\n", [(3, "name", "duplicate key")]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_every_error_names_its_line_and_field(case: str) -> None:
    text, expected = MALFORMED[case]
    found = _errors(text)
    assert len(found) == len(expected), found
    for (line, path, fragment), (got_line, got_path, message) in zip(expected, found, strict=True):
        assert (got_line, got_path) == (line, path), found
        assert fragment in message, found


def test_structural_and_semantic_errors_are_reported_together() -> None:
    text = "training:\n  params: {C: high}\npromotion:\n  floors: {roc_auc: x}\nmodel_nam: churn\n"
    found = _errors(text)
    assert [(line, path) for line, path, _ in found] == [
        (2, "training.params.C"), (4, "promotion.floors.roc_auc"), (5, "model_nam")]


def test_a_spec_round_trips_through_yaml() -> None:
    spec = validate_text(EXAMPLE.read_text())
    assert validate_text(dump_spec(spec)) == spec
    assert to_definitions(validate_text(dump_spec(spec))) == to_definitions(spec)
