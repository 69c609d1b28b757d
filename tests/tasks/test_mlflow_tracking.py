"""Retried MLflow tasks are idempotent: a second call (what a Prefect retry does) adds no run and no metric point."""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient

from blocks.mlflow_server import MlflowServer
from tasks.mlflow_tracking import TAG_TRIAL_KEY, log_evaluation, log_trial_run
from tasks.model_evaluation import Evaluation
from tasks.sklearn_training import TrialResult


@pytest.fixture()
def parent(mlflow_server) -> tuple[MlflowServer, MlflowClient, str, str]:
    server = MlflowServer(tracking_uri=mlflow_server.url, experiment_name="tests-retries")
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("tests-retries")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("tests-retries")
    run = client.create_run(experiment_id, run_name=f"parent-{uuid.uuid4().hex[:6]}")
    return server, client, experiment_id, run.info.run_id


def test_retried_trial_logging_reuses_its_run(parent) -> None:
    server, client, experiment_id, parent_run_id = parent
    trial = TrialResult(trial=3, params={"C": 0.5}, metrics={"roc_auc": 0.81, "accuracy": 0.77},
                        model_path="/nonexistent.joblib", fit_seconds=0.2)
    first = log_trial_run.fn(server, experiment_id, parent_run_id, trial, "sklearn.linear_model.LogisticRegression")
    second = log_trial_run.fn(server, experiment_id, parent_run_id, trial, "sklearn.linear_model.LogisticRegression")
    assert first == second
    children = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    assert [c.info.run_id for c in children] == [first]
    assert children[0].data.tags[TAG_TRIAL_KEY] == f"{parent_run_id}/3"
    assert len(client.get_metric_history(first, "valid_roc_auc")) == 1


def test_retry_after_a_half_logged_trial_completes_it_without_duplicates(parent) -> None:
    """The first attempt created the run and died before the metrics: the retry fills them in once."""
    server, client, experiment_id, parent_run_id = parent
    half = client.create_run(experiment_id, run_name="trial-0", tags={
        "mlflow.parentRunId": parent_run_id, TAG_TRIAL_KEY: f"{parent_run_id}/0"})
    client.log_metric(half.info.run_id, "valid_roc_auc", 0.7, step=0)
    trial = TrialResult(trial=0, params={"C": 1.0}, metrics={"roc_auc": 0.7, "accuracy": 0.6},
                        model_path="/nonexistent.joblib", fit_seconds=0.1)
    run_id = log_trial_run.fn(server, experiment_id, parent_run_id, trial, "est")
    assert run_id == half.info.run_id
    assert len(client.get_metric_history(run_id, "valid_roc_auc")) == 1
    assert len(client.get_metric_history(run_id, "valid_accuracy")) == 1
    assert client.get_run(run_id).info.status == "FINISHED"


def test_retried_evaluation_logging_appends_no_second_point(parent) -> None:
    server, client, _, run_id = parent
    evaluation = Evaluation(model="challenger", rows=100, metrics={"roc_auc": 0.8, "log_loss": 0.4},
                            slice_metrics={"plan": {"basic": {"roc_auc": 0.79}}}, slice_gaps={"plan": 0.02},
                            fairness={"disparity": 0.05})
    log_evaluation.fn(server, run_id, evaluation)
    log_evaluation.fn(server, run_id, evaluation)
    for key in ("test_roc_auc", "test_log_loss", "slice.plan.basic.roc_auc", "slice_gap.plan", "fairness.disparity"):
        assert len(client.get_metric_history(run_id, key)) == 1, key
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} == {"evaluation/evaluation.json"}


def test_retried_dataset_input_logging_records_one_input(parent, tmp_path) -> None:
    import pandas as pd

    from tasks.mlflow_tracking import log_dataset_input

    server, client, _, run_id = parent
    path = tmp_path / "data.parquet"
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]}).to_parquet(path)
    first = log_dataset_input.fn(server, run_id, str(path), "repo/data.parquet@abc", "data", "y")
    second = log_dataset_input.fn(server, run_id, str(path), "repo/data.parquet@abc", "data", "y")
    assert first == second
    assert len(client.get_run(run_id).inputs.dataset_inputs) == 1
