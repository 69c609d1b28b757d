"""The ``continuous-training`` flow: version -> validate -> tune -> evaluate -> gate -> register -> promote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run
from pydantic import BaseModel

from blocks.settings import state_dir
from flows.common import (
    DEFAULT_DATASET_PATH,
    DEFAULT_MODEL_NAME,
    contract_file,
    inference_log_dir,
    load_contract,
    load_dvc,
    load_mlflow,
    load_policy,
    model_cache_dir,
)
from tasks import lineage as L
from tasks.data_validation import resolve_data_contract, validate_dataset
from tasks.dvc_data import init_data_repo, pull_dataset, read_dvc_md5, version_dataset
from tasks.events import DATA_VALIDATION_FAILED, DATA_VERSIONED, MODEL_PROMOTED, MODEL_REJECTED, emit_model_event
from tasks.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    download_model_version,
    find_version_by_tag,
    get_alias_version,
    register_model_version,
    set_model_alias,
    tag_model_version,
)
from tasks.mlflow_tracking import (
    check_tracking_server,
    finish_pipeline_run,
    log_dataset_input,
    log_evaluation,
    log_sklearn_model,
    log_trial_run,
    run_url,
    start_pipeline_run,
)
from tasks.model_evaluation import evaluate_champion, evaluate_model
from tasks.monitoring_data import build_feedback_dataset, window_bounds
from tasks.prefect_artifacts import publish_report
from tasks.promotion_gate import gate_challenger
from tasks.sample_data import generate_sample_batch
from tasks.sklearn_training import (
    TrainingSpec,
    expand_trials,
    resolve_training_task,
    select_best_trial,
    split_dataset,
    split_files_exist,
    submit_trials,
)


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

    def render(self) -> str:
        """Return a readable summary."""
        lines = [
            f"model         {self.model_name} version {self.model_version} aliases {', '.join(self.aliases) or '-'}",
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
    data_file: str | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    target: str = "churned",
    dataset_path: str = DEFAULT_DATASET_PATH,
    training: TrainingSpec | None = None,
    mlflow_block: str | None = None,
    dvc_block: str | None = None,
    policy_block: str | None = None,
    contract_block: str | None = None,
    trigger: dict[str, Any] | None = None,
    feedback_hours: float | None = None,
    feedback_since: str | None = None,
    log_dir: str | None = None,
    serving_block: str | None = None,
) -> TrainingSummary:
    """Version the data, validate it, tune and evaluate, gate against the champion, register, promote.

    Every parameter defaults to the embedded set-up: with no arguments this trains on the
    data already versioned (or, the very first time, on a generated sample batch) with
    MLflow on SQLite and a DVC repo + local remote under the state folder.

    Args:
        data_file: New data (CSV / Parquet) to version and train on; None retrains on the
            dataset currently versioned (a sample batch if there is none yet).
        model_name: Registered model name.
        target: Target column.
        dataset_path: Path of the dataset inside the data repository.
        training: Estimator, parameters, search space and split (defaults: logistic regression grid).
        mlflow_block: Name of a saved ``MlflowServer`` block (None: embedded SQLite).
        dvc_block: Name of a saved ``DvcRepository`` block (None: embedded repo + local remote).
        policy_block: Name of a saved ``PromotionPolicy`` block (None: default policy).
        contract_block: Name of a saved ``DataContract`` block (None: the contract stored for
            this model, inferred from its first dataset).
        trigger: The event or schedule that started this run (recorded in lineage tags).
        feedback_hours: With no ``data_file``, train on the versioned data plus the predictions
            of the last this many hours whose ground truth has arrived (what a drift-triggered
            retrain uses); the combined set is versioned like any new data.
        feedback_since: Like ``feedback_hours`` but from this ISO 8601 time on (a drift
            event passes the start of the window that drifted).
        log_dir: Inference log root for ``feedback_hours`` (None: the serving block's, else the default).
        serving_block: Name of the saved ``BentoMLServing`` block whose inference log feeds back.

    Returns:
        A :class:`TrainingSummary` (data rev, run id, model version, verdict and reasons).

    Raises:
        DataValidationError: The data broke its contract; nothing was trained or promoted.
        TrackingServerError: MLflow is unreachable; nothing was registered.
        TrainingConfigError: The estimator or its parameters are invalid.

    Examples:
        >>> from flows.continuous_training import continuous_training
        >>> summary = continuous_training()  # doctest: +SKIP
        >>> print(summary.render())  # doctest: +SKIP
        >>> continuous_training(data_file="new_batch.parquet", mlflow_block="prod-mlflow")  # doctest: +SKIP
    """
    logger = get_run_logger()
    spec = training or TrainingSpec()
    mlflow_server = load_mlflow(mlflow_block)
    data_repo = load_dvc(dvc_block)
    policy = load_policy(policy_block)
    contract = load_contract(contract_block)
    home = state_dir()

    expand_trials(spec)  # bad estimator paths and parameters fail here, before any work
    experiment_id = check_tracking_server(mlflow_server)
    capture = L.capture_lineage(trigger)

    init_data_repo(data_repo)
    if data_file is None and read_dvc_md5(data_repo.repo_path, dataset_path) is None:
        data_file = generate_sample_batch(str(home / "incoming" / "sample-day0.parquet"), task_type=(
            "regression" if spec.task_type == "regression" else "classification"))
    if data_file is None and (feedback_hours or feedback_since) and read_dvc_md5(data_repo.repo_path, dataset_path):
        current = pull_dataset(data_repo, dataset_path, "HEAD", str(home / "cache" / "data"))
        since = feedback_since or window_bounds(feedback_hours or 24.0)[0]
        feedback = build_feedback_dataset(current, inference_log_dir(log_dir, serving_block), model_name, since, target,
                                          str(home / "incoming" / f"{model_name}-feedback.parquet"))
        data_file = feedback.path
    version = version_dataset(data_repo, data_file or str(Path(data_repo.repo_path) / dataset_path), dataset_path)
    emit_model_event(DATA_VERSIONED, model_name, {"dataset_path": dataset_path, "rev": version.rev,
                                                  "md5": version.md5, "new_commit": version.new_commit},
                     labels={"mlops.origin": "continuous-training"})
    local_file = pull_dataset(data_repo, dataset_path, version.rev, str(home / "cache" / "data"))

    # The task type (and a policy naming metrics it cannot produce) is settled before any trial.
    task = resolve_training_task(local_file, target, spec, policy, required=False)
    contract = contract or resolve_data_contract(local_file, str(contract_file(model_name)), target,
                                                 classification=task is None or task.task_type != "regression")
    report = validate_dataset(local_file, contract)
    if not report.passed:
        emit_model_event(DATA_VALIDATION_FAILED, model_name, {"dataset_path": dataset_path, "rev": version.rev,
                                                              "violations": [v.message for v in report.violations]})
        publish_report(f"{model_name}-validation",
                       "# Data validation failed\n\nNothing was trained or promoted.\n\n"
                       + "\n".join(f"- **{v.check}** {v.message}" for v in report.violations))
        report.raise_for_violations()
    task = task or resolve_training_task(local_file, target, spec, policy)
    rules = policy.resolved(task.task_type)
    concrete = spec.resolved(task.task_type, getattr(contract, "time_column", None))
    roles = contract.feature_roles() if hasattr(contract, "feature_roles") else None

    lineage = {**capture, L.TAG_DATA_REV: version.rev, L.TAG_DATA_MD5: version.md5, L.TAG_DATA_PATH: dataset_path,
               L.TAG_DATA_REPO: data_repo.repo_url or data_repo.repo_path, L.TAG_DATA_REMOTE: data_repo.remote_url,
               L.TAG_ESTIMATOR: concrete.estimator or "", L.TAG_TARGET: target, **task.tags()}
    key = training_key(version.md5, spec, target, policy.model_dump_json())
    champion = get_alias_version(mlflow_server, model_name, CHAMPION)
    existing = find_version_by_tag(mlflow_server, model_name, L.TAG_TRAINING_KEY, key)
    if existing is not None:
        logger.info("Version %s was already trained on this data with these settings; reusing it", existing.version)
        summary = TrainingSummary(
            model_name=model_name, data_rev=version.rev, data_md5=version.md5, run_id=existing.run_id,
            run_url=run_url(mlflow_server, experiment_id, existing.run_id or ""), model_version=existing.version,
            promoted=False, aliases=existing.aliases, verdict=existing.tags.get(L.TAG_GATE_VERDICT, "unknown"),
            reasons=["identical data and settings: no new version"], reused=True,
            champion_before=champion.version if champion else None,
            champion_after=champion.version if champion else None, metrics={}, task_type=task.task_type)
        print(summary.render())
        return summary

    run_id = start_pipeline_run(mlflow_server, experiment_id, f"{model_name}-{flow_run.name or 'ad-hoc'}",
                                {**lineage, L.TAG_TRAINING_KEY: key},
                                {"estimator": concrete.estimator, "target": target, **(concrete.params or {}),
                                 "search_space": json.dumps(concrete.search_space), "split": concrete.split,
                                 "task_type": task.task_type})
    try:
        source = f"{lineage[L.TAG_DATA_REPO]}/{dataset_path}@{version.rev}"
        log_dataset_input(mlflow_server, run_id, local_file, source, dataset_path, target)
        split_dir, model_dir = str(home / "cache" / "splits"), str(home / "cache" / "models")
        # Cached results name files; if the files are gone, recompute and overwrite the cache entry.
        refresh = not split_files_exist(local_file, concrete, split_dir)
        split = split_dataset.with_options(refresh_cache=refresh)(local_file, target, concrete, split_dir, roles,
                                                                  task.task_type)
        # One task per trial; only trials whose model file is missing are refit (resume after a crash).
        results = [f.result() for f in submit_trials(split, target, concrete, expand_trials(concrete), model_dir,
                                                     task)]
        log_trial_run.map(unmapped(mlflow_server), experiment_id, run_id, results, concrete.estimator).result()
        best = select_best_trial(results, concrete.metric(task.task_type))

        plot_dir = str(home / "cache" / "plots" / run_id)
        scoring = {"slice_columns": rules.slice_columns, "sensitive_attribute": rules.sensitive_attribute,
                   "primary_metric": rules.primary_metric, "min_slice_rows": rules.min_slice_rows,
                   "classes": task.classes, "positive_label": task.positive_label,
                   "fairness_metric": rules.fairness_metric}
        evaluation = evaluate_model(best.model_path, split.test, target, task.task_type, split.features,
                                    plot_dir=plot_dir, **scoring)
        champion_score = None
        if champion is not None:
            # A registry or download error fails the run here (nothing promoted); only a champion that
            # genuinely cannot score this test set comes back as `unscorable`, for the gate's policy.
            champion_dir = download_model_version(mlflow_server, champion, model_cache_dir(mlflow_server))
            champion_score = evaluate_champion(champion_dir, split.test, target, task.task_type, split.features,
                                               **scoring)
        champion_eval = champion_score.evaluation if champion_score else None
        verdict = gate_challenger(evaluation, champion_eval, rules, champion.version if champion else None,
                                  champion_score.unscorable if champion_score else None)
        log_evaluation(mlflow_server, run_id, evaluation)
        model_uri = log_sklearn_model(mlflow_server, run_id, best.model_path, split.test, split.features)

        gate_tags = {L.TAG_GATE_VERDICT: verdict.label,
                     L.TAG_GATE_REASONS: json.dumps(verdict.stated_reasons),
                     L.TAG_GATE_CHAMPION: verdict.champion_version or "none", **verdict.tags(),
                     L.TAG_PARAMS: json.dumps(best.params, sort_keys=True, default=str),
                     L.TAG_FEATURES: json.dumps(split.features), L.TAG_TIME_COLUMN: split.time_column,
                     L.TAG_COLUMN_ROLES: json.dumps(split.column_roles or split.roles),
                     L.TAG_TEST_METRICS: json.dumps(evaluation.metrics, sort_keys=True)}
        registered = register_model_version(mlflow_server, model_name, model_uri, run_id,
                                            {**lineage, **gate_tags, L.TAG_TRAINING_KEY: key})
        aliases = [CHALLENGER]
        set_model_alias(mlflow_server, model_name, CHALLENGER, registered.version,
                        f"trained on data rev {version.rev[:12]}", lineage[L.TAG_FLOW_RUN_ID])
        if verdict.promote:
            set_model_alias(mlflow_server, model_name, CHAMPION, registered.version,
                            "passed the gate: " + "; ".join(verdict.passed), lineage[L.TAG_FLOW_RUN_ID])
            aliases.append(CHAMPION)
            emit_model_event(MODEL_PROMOTED, model_name, {
                "version": registered.version, "previous_version": champion.version if champion else None,
                "run_id": run_id, "reasons": verdict.passed})
        else:
            tag_model_version(mlflow_server, model_name, registered.version, {"mlops.rejected_reasons": "; ".join(
                verdict.reasons)})
            emit_model_event(MODEL_REJECTED, model_name, {
                "version": registered.version, "champion_version": champion.version if champion else None,
                "run_id": run_id, "reasons": verdict.reasons})
        finish_pipeline_run(mlflow_server, run_id, "FINISHED", {**gate_tags, "mlops.model_version": registered.version})
    except BaseException:
        finish_pipeline_run(mlflow_server, run_id, "FAILED")
        raise

    summary = TrainingSummary(
        model_name=model_name, data_rev=version.rev, data_md5=version.md5, run_id=run_id,
        run_url=run_url(mlflow_server, experiment_id, run_id), model_version=registered.version,
        promoted=verdict.promote, aliases=aliases, verdict=verdict.label, reasons=verdict.stated_reasons,
        champion_before=champion.version if champion else None,
        champion_after=registered.version if verdict.promote else (champion.version if champion else None),
        metrics=evaluation.metrics, champion_metrics=champion_eval.metrics if champion_eval else {},
        task_type=task.task_type)
    table = [{"metric": k, "challenger": round(v, 5),
              "champion": round(summary.champion_metrics[k], 5) if k in summary.champion_metrics else None}
             for k, v in sorted(evaluation.metrics.items())]
    publish_report(f"{model_name}-training", f"# {model_name}: {verdict.label}\n\n```\n{summary.render()}\n```\n\n"
                   f"MLflow run: {summary.run_url}", table, {"MLflow run": summary.run_url or ""})
    print(summary.render())
    return summary
