"""The ``continuous-training`` flow: data -> task -> tune -> evaluate -> gate -> register -> promote.

Stages, each called once: the incoming data and the task (``flows/training_run.py``), the data
stage (``flows/training_data.py``: validate the incoming data, then version it with DVC), the
reuse check (same data and settings: same version; a version whose promotion was interrupted is
gated again), the MLflow parent run (a context manager that closes it FINISHED or FAILED), tuning
(the ``tune-trials`` subflow on its own task runner, ``flows/tuning.py``) and registration
(``flows/training_stages.py``), and the gate and the alias moves under the model's registry lock.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel

from blocks.settings import state_dir
from flows.common import (
    DEFAULT_DATASET_PATH,
    DEFAULT_MODEL_NAME,
    contract_file,
    load_contract,
    load_dvc,
    load_mlflow,
    load_policy,
)
from flows.deploy_model import prebuild_bento as prebuild
from flows.training_data import prepare_training_data
from flows.training_run import candidate, gate_under_lock, incoming_data, pipeline_run, resolve_task
from flows.tuning import TrialRunner, TrialRunnerKind
from tasks import lineage as L
from tasks.mlflow_pages import version_headline
from tasks.mlflow_recovery import close_interrupted_runs
from tasks.mlflow_registry import CHAMPION, PENDING, find_version_by_tag, get_alias_version, promotion_state
from tasks.mlflow_tracking import check_tracking_server, run_url
from tasks.monitoring_links import model_version_link
from tasks.prefect_artifacts import publish_report
from tasks.sklearn_training import TrainingSpec, expand_trials, split_dataset, split_files_exist


class TrainingSummary(BaseModel):
    """What one continuous-training run did."""

    model_name: str
    data_rev: str
    data_md5: str
    run_id: str | None
    run_url: str | None
    model_version: str | None
    promoted: bool
    aliases: list[str]
    verdict: str
    reasons: list[str]
    champion_before: str | None
    champion_after: str | None
    metrics: dict[str, float]
    champion_metrics: dict[str, float] = {}
    reused: bool = False
    task_type: str = ""
    primary_metric: str | None = None
    version_url: str | None = None
    trigger_links: dict[str, str] = {}

    @classmethod
    def of_run(cls, mlflow_server: Any, experiment_id: str, run_id: str, version: Any, registered: Any,
               evaluation: Any, verdict: Any, aliases: list[str], champion: Any, champion_eval: Any, reused: bool,
               info: Any, trigger: dict[str, Any] | None) -> TrainingSummary:
        """Summarize a run that gated (and maybe promoted) ``registered``."""
        before = champion.version if champion else None
        return cls(
            model_name=registered.name, data_rev=version.rev, data_md5=version.md5, run_id=run_id,
            run_url=run_url(mlflow_server, experiment_id, run_id), model_version=registered.version,
            promoted=verdict.promote, aliases=aliases, verdict=verdict.label, reasons=verdict.stated_reasons,
            champion_before=before, champion_after=registered.version if verdict.promote else before,
            metrics=evaluation.metrics, champion_metrics=champion_eval.metrics if champion_eval else {},
            reused=reused, task_type=info.task_type, primary_metric=verdict.compared.get("primary_metric"),
            version_url=model_version_link(mlflow_server, registered.name, registered.version),
            trigger_links=trigger_links(trigger))

    def render(self) -> str:
        """Return a readable summary."""
        lines = [
            f"model         {self.model_name} version {self.model_version} (aliases moved: "
            f"{', '.join(self.aliases) or '-'})",
            f"verdict       {self.verdict}" + (" (reused: identical data and settings)" if self.reused else ""),
            f"data          DVC rev {self.data_rev[:12]}  md5 {self.data_md5}",
            f"mlflow run    {self.run_id}",
            f"champion      {self.champion_before or '-'} -> {self.champion_after or '-'}",
            "metrics       " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(self.metrics.items())),
        ]
        lines += [f"  reason      {r}" for r in self.reasons]
        return "\n".join(lines)


def training_key(data_md5: str, spec: TrainingSpec, target: str, policy_json: str) -> str:
    """Key of one training configuration on one dataset: same key, same model."""
    payload = json.dumps([data_md5, spec.model_dump(mode="json"), target, policy_json], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@flow(name="continuous-training", log_prints=True)
def continuous_training(
    data_file: str | None = None, model_name: str = DEFAULT_MODEL_NAME, target: str = "churned",
    dataset_path: str = DEFAULT_DATASET_PATH, training: TrainingSpec | None = None, mlflow_block: str | None = None,
    dvc_block: str | None = None, policy_block: str | None = None, contract_block: str | None = None,
    trigger: dict[str, Any] | None = None, feedback_hours: float | None = None, feedback_since: str | None = None,
    log_dir: str | None = None, serving_block: str | None = None, trial_runner: TrialRunnerKind = "threads",
    dask_address: str | None = None, dask_workers: int | None = None, prebuild_bento: bool = False,
) -> TrainingSummary:
    """Version the data, validate it, tune and evaluate, gate against the champion, register, promote.

    No arguments: the versioned data (a sample batch at first), MLflow on SQLite, DVC under the state folder.

    Args:
        data_file: New data (CSV / Parquet / JSON Lines) to validate, version and train on (None: the versioned set).
        model_name: Registered model name.
        target: Target column.
        dataset_path: Path of the dataset inside the data repository.
        training: Estimator, parameters, search space and split (default: logistic regression grid).
        mlflow_block: Saved ``MlflowServer`` block (None: embedded SQLite).
        dvc_block: Saved ``DvcRepository`` block (None: embedded repo + local remote).
        policy_block: Saved ``PromotionPolicy`` block (None: default policy).
        contract_block: Saved ``DataContract`` block (None: the model's stored contract, else inferred).
        trigger: The event or schedule that started this run (recorded in lineage tags).
        feedback_hours: With no ``data_file``: add the last hours of predictions whose ground truth arrived.
        feedback_since: Like ``feedback_hours``, from this ISO 8601 time (a drift event passes its window start).
        log_dir: Inference log root of the feedback (None: the serving block's, else the default).
        serving_block: Saved ``BentoMLServing`` block: its inference log feeds back, its store gets the prebuild.
        trial_runner: Task runner of the ``tune-trials`` subflow only: ``threads``, ``sequential`` or ``dask``.
        dask_address: With ``dask``: a running scheduler (``tcp://host:8786``) sharing the state folder's path.
        dask_workers: With ``dask`` and no address: worker processes of a temporary ``LocalCluster``.
        prebuild_bento: After a promotion, build its bento while ``deploy-model`` starts (a shorter loop).

    Returns:
        A :class:`TrainingSummary` (data rev, run id, model version, verdict and reasons).

    Raises:
        DataValidationError: The data broke its contract; nothing was trained or promoted.
        TrackingServerError: MLflow is unreachable; nothing was registered.
        TrainingConfigError: The estimator or its parameters, or the trial runner, are invalid.

    Examples:
        >>> from flows.continuous_training import continuous_training
        >>> print(continuous_training().render())  # doctest: +SKIP
        >>> continuous_training(data_file="new_batch.parquet", mlflow_block="prod-mlflow")  # doctest: +SKIP
    """
    spec = training or TrainingSpec()
    mlflow_server, data_repo = load_mlflow(mlflow_block), load_dvc(dvc_block)
    policy, contract, home = load_policy(policy_block), load_contract(contract_block), state_dir()
    expand_trials(spec)  # bad estimator paths and parameters fail here, before any work
    runner = TrialRunner.of(trial_runner, dask_address, dask_workers)  # likewise a bad trial runner
    experiment_id, capture = check_tracking_server(mlflow_server), L.capture_lineage(trigger)
    data_file = incoming_data(data_repo, data_file, dataset_path, model_name, target, spec, contract, home,
                              feedback_hours, feedback_since, log_dir, serving_block)
    data = prepare_training_data(data_repo, data_file, dataset_path, model_name, target, contract,
                                 str(contract_file(model_name)), home, task_type=spec.task_type)
    task = resolve_task(data, data_repo, dataset_path, target, spec, policy, capture)

    # Reuse: identical data and settings give the same version; an interrupted promotion is gated again.
    key = training_key(data.version.md5, spec, target, policy.model_dump_json())
    close_interrupted_runs(mlflow_server, experiment_id, model_name, task.lineage[L.TAG_FLOW_RUN_ID])
    existing = find_version_by_tag(mlflow_server, model_name, L.TAG_TRAINING_KEY, key)
    if existing is not None and promotion_state(existing) != PENDING:
        return _reused(mlflow_server, experiment_id, model_name, existing, data.version, task.info.task_type)

    with pipeline_run(mlflow_server, experiment_id, model_name, task, key, target, existing) as run:
        split = _split(data, task, target, home)
        registered, evaluation = candidate(mlflow_server, experiment_id, run, model_name, task, split, data,
                                           dataset_path, target, key, home, runner, existing)
        # A promotion pre-builds the bento and starts its standby backend: deploy-model adopts both.
        champion, champion_eval, verdict, aliases = gate_under_lock(
            mlflow_server, model_name, registered, evaluation, split, target, task, data.version.rev, run,
            resumed=existing is not None, on_promoted=partial(prebuild, mlflow_server, serving_block, model_name,
                                                              registered.version) if prebuild_bento else None)

    summary = TrainingSummary.of_run(mlflow_server, experiment_id, run.run_id, data.version, registered, evaluation,
                                     verdict, aliases, champion, champion_eval, existing is not None, task.info,
                                     trigger)
    _publish(summary)
    return summary


def _split(data: Any, task: Any, target: str, home: Any) -> Any:
    """Split the versioned data (train / test files cached by data hash and split settings)."""
    split_dir = str(home / "cache" / "splits")
    return split_dataset.with_options(refresh_cache=not split_files_exist(data.local_file, task.spec, split_dir))(
        data.local_file, target, task.spec, split_dir, data.contract.feature_roles(), task.info.task_type)


def _reused(mlflow_server: Any, experiment_id: str, model_name: str, existing: Any, version: Any,
            task_type: str) -> TrainingSummary:
    """Return (and print) the summary of a run that reused an identical earlier version."""
    get_run_logger().info("Version %s was already trained on this data with these settings; reusing it",
                          existing.version)
    champion = get_alias_version(mlflow_server, model_name, CHAMPION)
    summary = TrainingSummary(
        model_name=model_name, data_rev=version.rev, data_md5=version.md5, run_id=existing.run_id,
        run_url=run_url(mlflow_server, experiment_id, existing.run_id or ""), model_version=existing.version,
        promoted=False, aliases=existing.aliases, verdict=existing.tags.get(L.TAG_GATE_VERDICT, "unknown"),
        reasons=["identical data and settings: no new version"], reused=True,
        champion_before=champion.version if champion else None,
        champion_after=champion.version if champion else None, metrics={}, task_type=task_type)
    print(summary.render())
    return summary


def trigger_links(trigger: dict[str, Any] | None) -> dict[str, str]:
    """Links to what started a triggered run: the event, and for monitoring events the monitor run and its report.

    Examples:
        >>> trigger_links({"event": "mlops.monitoring.drift_detected",
        ...                "payload": {"monitor_flow_run_url": "http://ui/runs/flow-run/1", "report_url": None}})
        {'Monitor run': 'http://ui/runs/flow-run/1'}
    """
    if not trigger or not trigger.get("event"):
        return {}
    payload = trigger.get("payload") or {}
    if isinstance(payload, str):  # a template renders the payload as its text when it is not plain JSON
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = {}
    links = {"Monitor run": payload.get("monitor_flow_run_url"), "MLflow drift report": payload.get("report_url")}
    base = L.prefect_ui_url()
    if base and trigger.get("event_id") and trigger.get("occurred"):
        links["Triggering event"] = f"{base}/events/event/{str(trigger['occurred'])[:10]}/{trigger['event_id']}"
    return {k: v for k, v in links.items() if isinstance(v, str) and v.startswith(("http://", "https://"))}


def _publish(summary: TrainingSummary) -> None:
    """Publish the summary and the metrics table as Prefect artifacts, and print it."""
    table = [{"metric": k, "challenger": round(v, 5),
              "champion": round(summary.champion_metrics[k], 5) if k in summary.champion_metrics else None}
             for k, v in sorted(summary.metrics.items())]
    metric = summary.primary_metric
    headline = version_headline(summary.verdict, metric, summary.metrics.get(metric or ""),
                                summary.champion_metrics.get(metric or ""), summary.champion_before, summary.data_rev)
    description = f"v{summary.model_version} {headline}" + (" (reused)" if summary.reused else "")
    links = {"MLflow run": summary.run_url or "", "MLflow model version": summary.version_url or "",
             **summary.trigger_links}
    started_by = "".join(f"\n- [{k}]({v})" for k, v in summary.trigger_links.items())
    publish_report(f"{summary.model_name}-training",
                   f"# {summary.model_name} v{summary.model_version}: {headline}\n\n```\n{summary.render()}\n```\n\n"
                   f"MLflow run: {summary.run_url}" + (f"\n\nModel version: {summary.version_url}"
                                                        if summary.version_url else "")
                   + (f"\n\n**Started by**{started_by}" if started_by else ""),
                   table, links, description=description)
    print(summary.render())
