"""Trials on Dask: a real ``distributed.LocalCluster`` (2 worker processes), real Prefect and mlflow servers.

The tuning stage (the ``tune-trials`` subflow) runs on ``prefect-dask``'s ``DaskTaskRunner`` when
``continuous_training(trial_runner="dask")``; its results equal the thread pool's for the same seed,
nothing else of the flow reaches the cluster, and the per-trial resume (only missing models are refit)
works on Dask as it does on threads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.settings import state_dir
from flows.continuous_training import continuous_training
from flows.tuning import TrialRunner, run_trials, tune_trials
from tasks import lineage as L
from tasks.exceptions import TrainingConfigError
from tasks.sample_data import make_customer_frame
from tasks.sklearn_spec import TaskInfo
from tasks.sklearn_training import SplitFiles, TrainingSpec, select_best_trial, split_dataset

SPEC = TrainingSpec(search_space={"C": [0.01, 0.1, 1.0, 10.0]})  # 4 trials


@pytest.fixture(scope="module")
def dask_cluster(request: pytest.FixtureRequest):
    """A LocalCluster of 2 worker processes (one thread each), closed by a finalizer."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           preload=["tasks.sklearn_training"])  # imports paid while the workers start
    request.addfinalizer(cluster.close)
    return cluster


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dask-data") / "tiny.parquet"
    make_customer_frame(400, seed=7, day=0).to_parquet(path, index=False)
    return path


def _finished_on_dask(cluster) -> dict[str, int]:
    """Task name prefix -> tasks the cluster's scheduler saw finish."""
    return {name: prefix.state_counts.get("memory", 0) for name, prefix in cluster.scheduler.task_prefixes.items()
            if prefix.state_counts.get("memory", 0)}


def _trial_metrics(client: MlflowClient, run_id: str) -> dict[str, dict[str, float]]:
    runs = client.search_runs([client.get_run(run_id).info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    return {r.info.run_name: {k: v for k, v in r.data.metrics.items() if k != "fit_seconds"} for r in runs}


async def _runs_of(flow_run_id: str) -> tuple[list, list]:
    """(child flow runs, task runs) of one flow run, from the Prefect server."""
    async with get_client() as client:
        children = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return children, tasks


async def _task_runs(flow_run_id: str) -> list:
    return (await _runs_of(flow_run_id))[1]


def test_dask_trials_equal_thread_trials_and_only_tuning_runs_on_dask(
        dask_cluster, tiny_data: Path, mlflow_block_name: str, mlflow_server, tmp_path: Path) -> None:
    import joblib
    import pandas as pd
    from prefect.utilities.asyncutils import run_coro_as_sync

    state = continuous_training(data_file=str(tiny_data), model_name="trials-dask",
                                dataset_path="data/dask-trials.parquet", training=SPEC, mlflow_block=mlflow_block_name,
                                trial_runner="dask", dask_address=dask_cluster.scheduler_address, return_state=True)
    summary = state.result()
    assert summary.model_version and summary.metrics

    # Only the 4 trials reached the cluster; everything else ran in the parent flow, on its own runner.
    finished = _finished_on_dask(dask_cluster)
    assert sum(finished.values()) == 4 and all("trial" in name for name in finished), finished
    assert isinstance(continuous_training.task_runner, ThreadPoolTaskRunner)
    children, parent_tasks = run_coro_as_sync(_runs_of(str(state.state_details.flow_run_id)))
    tuning = [c for c in children if c.name == "tune-trials-dask"]
    assert len(tuning) == 1, [c.name for c in children]
    trial_tasks = run_coro_as_sync(_task_runs(str(tuning[0].id)))
    assert sorted(t.name for t in trial_tasks) == [f"train-trial-{i}" for i in range(4)]
    assert all(t.state.name == "Completed" for t in trial_tasks), [t.state.name for t in trial_tasks]
    parent_names = {t.name.rsplit("-", 1)[0] for t in parent_tasks}
    assert {"split-dataset", "log-trial-run", "evaluate-model"} <= parent_names
    assert not any(name.startswith("train-trial") for name in parent_names)

    # The same trials on the thread pool (same split, spec and seed, as the subflow was called) give the
    # same metrics trial by trial, the same best parameters, and a best model that predicts the same.
    given = tuning[0].parameters
    split, spec, task = SplitFiles(**given["split"]), TrainingSpec(**given["spec"]), TaskInfo(**given["task"])
    local = tune_trials.with_options(task_runner=ThreadPoolTaskRunner())(split, "churned", spec,
                                                                         str(tmp_path / "threads"), task)
    assert sum(_finished_on_dask(dask_cluster).values()) == 4, "the thread pool run must not use the cluster"
    client = MlflowClient(tracking_uri=mlflow_server.url)
    on_dask = _trial_metrics(client, summary.run_id)
    assert on_dask == {f"trial-{t.trial}": {f"valid_{k}": v for k, v in t.metrics.items()} for t in local}
    best = select_best_trial.fn(local, spec.metric(task.task_type))
    registered = client.get_model_version("trials-dask", summary.model_version).tags
    assert json.loads(registered[L.TAG_PARAMS]) == best.params
    dask_model = state_dir() / "cache" / "models" / Path(best.model_path).name
    test = pd.read_parquet(split.test)[split.features]
    assert (joblib.load(dask_model).predict_proba(test) == joblib.load(best.model_path).predict_proba(test)).all()


def test_resume_on_dask_refits_only_the_missing_models(dask_cluster, tiny_data: Path, tmp_path: Path) -> None:
    from prefect import flow
    from prefect.utilities.asyncutils import run_coro_as_sync

    spec = SPEC.resolved("binary")
    split = split_dataset.fn(str(tiny_data), "churned", spec, str(tmp_path / "splits"))
    runner = TrialRunner(kind="dask", dask_address=dask_cluster.scheduler_address)

    @flow
    def tune() -> list:
        return run_trials(split, "churned", spec, str(tmp_path / "models"), None, runner)

    first = tune()
    models = sorted(tmp_path.joinpath("models").glob("*.joblib"))
    assert len(first) == 4 and len(models) == 4
    stamps = {p: p.stat().st_mtime_ns for p in models}
    for path in models[:2]:
        path.unlink()  # as if the run had been killed before writing them

    state = tune_trials.with_options(task_runner=runner.task_runner())(
        split, "churned", spec, str(tmp_path / "models"), return_state=True)
    second = state.result()
    assert [t.metrics for t in second] == [t.metrics for t in first]
    assert [t.params for t in second] == [t.params for t in first]
    assert all(p.is_file() for p in models)
    assert [p for p in models if p.stat().st_mtime_ns != stamps[p]] == models[:2], "only missing models refit"
    states = sorted(t.state.name for t in run_coro_as_sync(_task_runs(str(state.state_details.flow_run_id))))
    assert states == ["Cached", "Cached", "Completed", "Completed"]


def test_bad_trial_runner_settings_fail_before_any_work() -> None:
    with pytest.raises(TrainingConfigError, match="set trial_runner='dask'"):
        TrialRunner.of("threads", dask_address="tcp://127.0.0.1:8786")
    with pytest.raises(TrainingConfigError, match="dask_workers"):
        TrialRunner.of("dask", dask_workers=0)
    with pytest.raises(TrainingConfigError, match=r"trial_runner is one of \['threads', 'sequential', 'dask'\]"):
        TrialRunner.of("ray")
    assert isinstance(TrialRunner.of("sequential").task_runner(), ThreadPoolTaskRunner)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # the ephemeral API: workers could not report
        with pytest.raises(TrainingConfigError, match="PREFECT_API_URL"):
            TrialRunner.of("dask", dask_workers=2).task_runner()
