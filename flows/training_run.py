"""The stages of ``continuous-training`` around tuning: incoming data, the task, the MLflow run, the locked gate.

Each function is one stage of the README's diagram, called once by the flow
(``flows/continuous_training.py``); the tuning stage is ``flows/tuning.py``, registration and the
gate are ``flows/training_stages.py``, the data stage is ``flows/training_data.py``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.runtime import flow_run

from blocks.data_contract import DataContract
from blocks.dvc_repository import DvcRepository
from blocks.mlflow_server import MlflowServer
from blocks.promotion_policy import PromotionPolicy
from flows.common import contract_file, inference_log_dir
from flows.training_data import PreparedData, known_time_column
from flows.training_stages import evaluate_registered, gate_and_promote, quietly, tune_and_register
from tasks import lineage as L
from tasks.dvc_data import init_data_repo, pull_dataset, read_dvc_md5
from tasks.mlflow_locks import acquire_model_lock, release_model_lock
from tasks.mlflow_registry import ModelVersionInfo
from tasks.mlflow_tracking import finish_pipeline_run, start_pipeline_run
from tasks.model_reproduction import TAG_TRAINING_SPEC
from tasks.monitoring_data import build_feedback_dataset, window_bounds
from tasks.sample_data import generate_sample_batch
from tasks.sklearn_training import TrainingSpec, resolve_training_task


def incoming_data(data_repo: DvcRepository, data_file: str | None, dataset_path: str, model_name: str, target: str,
                  spec: TrainingSpec, contract: DataContract | None, home: Path, feedback_hours: float | None,
                  feedback_since: str | None, log_dir: str | None, serving_block: str | None) -> str | None:
    """Return the file to version: the one given, a sample the very first time, or versioned data + labelled traffic.

    None means "retrain on the dataset already versioned".
    """
    init_data_repo(data_repo)
    if data_file is None and read_dvc_md5(data_repo.repo_path, dataset_path) is None:
        kind = "regression" if spec.task_type == "regression" else "classification"
        return generate_sample_batch(str(home / "incoming" / "sample-day0.parquet"), task_type=kind)
    if data_file is None and (feedback_hours or feedback_since):
        current = pull_dataset(data_repo, dataset_path, "HEAD", str(home / "cache" / "data"))
        since = feedback_since or window_bounds(feedback_hours or 24.0)[0]
        return build_feedback_dataset(current, inference_log_dir(log_dir, serving_block), model_name, since, target,
                                      str(home / "incoming" / f"{model_name}-feedback.parquet"),
                                      time_column=known_time_column(contract, str(contract_file(model_name)))).path
    return data_file


@dataclass
class TrainingTask:
    """What is learnt and how it is judged: the task, the policy's rules for it, the concrete spec, the lineage."""

    info: Any
    rules: Any
    spec: TrainingSpec
    lineage: dict[str, str]


def resolve_task(data: PreparedData, data_repo: DvcRepository, dataset_path: str, target: str, spec: TrainingSpec,
                 policy: PromotionPolicy, capture: dict[str, str]) -> TrainingTask:
    """Settle the task type, labels and metric defaults before any trial; build the lineage tags.

    A policy naming a metric the task cannot produce is refused here.
    """
    info = resolve_training_task(data.local_file, target, spec, policy)
    version = data.version
    concrete = spec.resolved(info.task_type, data.contract.time_column)
    lineage = {**capture, L.TAG_DATA_REV: version.rev, L.TAG_DATA_MD5: version.md5, L.TAG_DATA_PATH: dataset_path,
               L.TAG_DATA_REPO: data_repo.repo_url or data_repo.repo_path, L.TAG_DATA_REMOTE: data_repo.remote_url,
               L.TAG_ESTIMATOR: concrete.estimator or "", L.TAG_TARGET: target, **info.tags()}
    spec_json = concrete.model_dump_json()
    if len(spec_json) <= 5000:  # MLflow's tag limit; reproduce-model falls back to the flow run's parameters
        lineage[TAG_TRAINING_SPEC] = spec_json
    return TrainingTask(info=info, rules=policy.resolved(info.task_type), spec=concrete, lineage=lineage)


@dataclass
class PipelineRun:
    """The MLflow parent run of one training; ``finish_tags`` are set on it when the stage ends well."""

    run_id: str
    new: bool
    finish_tags: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def pipeline_run(mlflow_server: MlflowServer, experiment_id: str, model_name: str, task: TrainingTask, key: str,
                 target: str, existing: ModelVersionInfo | None) -> Iterator[PipelineRun]:
    """Open the MLflow parent run (or take the interrupted one's) and close it FINISHED or FAILED.

    A run resuming an interrupted promotion (``existing``) reuses that version's run and leaves it
    as it is. If MLflow is down when a failed run is closed, the next run closes it
    (``close_interrupted_runs``).
    """
    if existing is None:
        concrete = task.spec
        run = PipelineRun(start_pipeline_run(
            mlflow_server, experiment_id, f"{model_name}-{flow_run.name or 'ad-hoc'}",
            {**task.lineage, L.TAG_TRAINING_KEY: key, L.TAG_MODEL_NAME: model_name},
            {"estimator": concrete.estimator, "target": target, **(concrete.params or {}),
             "search_space": json.dumps(concrete.search_space), "split": concrete.split,
             "task_type": task.info.task_type}), new=True)
    else:
        get_run_logger().warning("Version %s was registered but its promotion never finished; gating it again",
                                 existing.version)
        run = PipelineRun(existing.run_id or "", new=False)
    try:
        yield run
    except BaseException:
        if run.new:
            quietly(finish_pipeline_run, mlflow_server, run.run_id, "FAILED")
        raise
    if run.new:
        finish_pipeline_run(mlflow_server, run.run_id, "FINISHED", run.finish_tags)


def candidate(mlflow_server: MlflowServer, experiment_id: str, run: PipelineRun, model_name: str, task: TrainingTask,
              split: Any, data: PreparedData, dataset_path: str, target: str, key: str, home: Path, runner: Any,
              existing: ModelVersionInfo | None) -> tuple[ModelVersionInfo, Any]:
    """Return the challenger and its evaluation: tuned (own task runner), evaluated, registered ``pending``.

    A version whose promotion was interrupted (``existing``) is evaluated again instead, and gated anew.
    """
    if existing is not None:
        return existing, evaluate_registered(mlflow_server, existing, split, target, task.info, task.rules)
    return tune_and_register(
        mlflow_server, experiment_id, run.run_id, model_name, task.spec, task.info, task.rules, split,
        data.local_file, dataset_path, target, {**task.lineage, L.TAG_TRAINING_KEY: key},
        str(home / "cache" / "models"), str(home / "cache" / "plots" / run.run_id), runner)


def gate_under_lock(mlflow_server: MlflowServer, model_name: str, registered: ModelVersionInfo, evaluation: Any,
                    split: Any, target: str, task: TrainingTask, data_rev: str, run: PipelineRun,
                    resumed: bool, on_promoted: Any = None) -> tuple[Any, Any, Any, list[str]]:
    """Gate and promote holding the model's registry lock (one promotion at a time per model).

    Returns:
        (champion before, its evaluation, the verdict, the aliases moved); the verdict's tags are
        added to the run's ``finish_tags``.
    """
    flow_run_id = task.lineage[L.TAG_FLOW_RUN_ID]
    lock = acquire_model_lock(mlflow_server, model_name, flow_run_id)
    try:
        result = gate_and_promote(mlflow_server, model_name, registered, evaluation, split, target, task.info,
                                  task.rules, lock, flow_run_id, data_rev, run.run_id, resumed=resumed,
                                  on_promoted=on_promoted)
    except BaseException:
        quietly(release_model_lock, mlflow_server, lock)  # else stale: broken once this flow run has ended
        raise
    release_model_lock(mlflow_server, lock)
    verdict = result[2]
    run.finish_tags.update({
        L.TAG_GATE_VERDICT: verdict.label, L.TAG_GATE_REASONS: json.dumps(verdict.stated_reasons),
        L.TAG_GATE_CHAMPION: verdict.champion_version or "none", "mlops.model_version": registered.version,
        **verdict.tags()})
    return result
