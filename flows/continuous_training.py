"""The ``continuous-training`` flow: version -> validate -> tune -> evaluate -> gate -> register -> promote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run
from pydantic import BaseModel

from blocks.mlflow_server import MlflowServer
from blocks.promotion_policy import PromotionPolicy
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
from tasks.exceptions import TrainingConfigError
from tasks.mlflow_locks import ModelLock, acquire_model_lock, release_model_lock
from tasks.mlflow_recovery import close_interrupted_runs
from tasks.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    DONE,
    PENDING,
    REJECTED,
    TAG_PROMOTION_STATE,
    ModelVersionInfo,
    download_model_version,
    find_version_by_tag,
    get_alias_version,
    promotion_state,
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
from tasks.model_evaluation import Evaluation, evaluate_model
from tasks.monitoring_data import build_feedback_dataset, window_bounds
from tasks.prefect_artifacts import publish_report
from tasks.promotion_gate import GateVerdict, gate_challenger
from tasks.sample_data import generate_sample_batch
from tasks.sklearn_training import (
    SplitFiles,
    TrainingSpec,
    expand_trials,
    select_best_trial,
    split_dataset,
    split_files_exist,
    train_trial,
    trial_models_exist,
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
        data_file = generate_sample_batch(str(home / "incoming" / "sample-day0.parquet"),
                                          task_type=spec.task_type)
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

    contract = contract or resolve_data_contract(local_file, str(contract_file(model_name)), target,
                                                 classification=spec.task_type == "classification")
    report = validate_dataset(local_file, contract)
    if not report.passed:
        emit_model_event(DATA_VALIDATION_FAILED, model_name, {"dataset_path": dataset_path, "rev": version.rev,
                                                              "violations": [v.message for v in report.violations]})
        publish_report(f"{model_name}-validation",
                       "# Data validation failed\n\nNothing was trained or promoted.\n\n"
                       + "\n".join(f"- **{v.check}** {v.message}" for v in report.violations))
        report.raise_for_violations()

    lineage = {**capture, L.TAG_DATA_REV: version.rev, L.TAG_DATA_MD5: version.md5, L.TAG_DATA_PATH: dataset_path,
               L.TAG_DATA_REPO: data_repo.repo_url or data_repo.repo_path, L.TAG_DATA_REMOTE: data_repo.remote_url,
               L.TAG_ESTIMATOR: spec.estimator, L.TAG_TARGET: target}
    key = training_key(version.md5, spec, target, policy.model_dump_json())
    close_interrupted_runs(mlflow_server, experiment_id, model_name, lineage[L.TAG_FLOW_RUN_ID])
    existing = find_version_by_tag(mlflow_server, model_name, L.TAG_TRAINING_KEY, key)
    if existing is not None and promotion_state(existing) != PENDING:
        logger.info("Version %s was already trained on this data with these settings; reusing it", existing.version)
        champion = get_alias_version(mlflow_server, model_name, CHAMPION)
        summary = TrainingSummary(
            model_name=model_name, data_rev=version.rev, data_md5=version.md5, run_id=existing.run_id,
            run_url=run_url(mlflow_server, experiment_id, existing.run_id or ""), model_version=existing.version,
            promoted=False, aliases=existing.aliases, verdict=existing.tags.get(L.TAG_GATE_VERDICT, "unknown"),
            reasons=["identical data and settings: no new version"], reused=True,
            champion_before=champion.version if champion else None,
            champion_after=champion.version if champion else None, metrics={})
        print(summary.render())
        return summary

    home_dirs = (str(home / "cache" / "splits"), str(home / "cache" / "models"))
    if existing is None:
        run_id = start_pipeline_run(mlflow_server, experiment_id, f"{model_name}-{flow_run.name or 'ad-hoc'}",
                                    {**lineage, L.TAG_TRAINING_KEY: key, L.TAG_MODEL_NAME: model_name},
                                    {"estimator": spec.estimator, "target": target, **spec.params,
                                     "search_space": json.dumps(spec.search_space), "split": spec.split})
    else:  # registered by a run that died before its promotion finished: gate it again now
        logger.warning("Version %s was registered but its promotion never finished; gating it again",
                       existing.version)
        run_id = existing.run_id or ""
    try:
        split = split_dataset.with_options(refresh_cache=not split_files_exist(local_file, spec, home_dirs[0]))(
            local_file, target, spec, home_dirs[0])
        if existing is None:
            registered, evaluation = _train_and_register(mlflow_server, experiment_id, run_id, model_name, spec,
                                                         policy, split, local_file, dataset_path, target,
                                                         {**lineage, L.TAG_TRAINING_KEY: key}, home_dirs[1])
        else:
            registered = existing
            evaluation = evaluate_model(download_model_version(mlflow_server, existing, model_cache_dir(mlflow_server)),
                                        split.test, target, spec.task_type, split.features, policy.slice_columns,
                                        policy.sensitive_attribute, policy.primary_metric, policy.min_slice_rows)
        lock = acquire_model_lock(mlflow_server, model_name, lineage[L.TAG_FLOW_RUN_ID])
        try:
            champion, champion_eval, verdict, aliases = _gate_and_promote(
                mlflow_server, model_name, registered, evaluation, split, target, spec, policy, lock,
                lineage[L.TAG_FLOW_RUN_ID], version.rev, run_id, resumed=existing is not None)
        except BaseException:
            _quietly(release_model_lock, mlflow_server, lock)  # else stale: broken once this flow run has ended
            raise
        release_model_lock(mlflow_server, lock)
        if existing is None:
            finish_pipeline_run(mlflow_server, run_id, "FINISHED", {
                L.TAG_GATE_VERDICT: verdict.label, L.TAG_GATE_REASONS: json.dumps(verdict.reasons or verdict.passed),
                L.TAG_GATE_CHAMPION: verdict.champion_version or "none", "mlops.model_version": registered.version})
    except BaseException:
        if existing is None:  # if MLflow is down this fails too; the next run closes it (close_interrupted_runs)
            _quietly(finish_pipeline_run, mlflow_server, run_id, "FAILED")
        raise

    summary = TrainingSummary(
        model_name=model_name, data_rev=version.rev, data_md5=version.md5, run_id=run_id,
        run_url=run_url(mlflow_server, experiment_id, run_id), model_version=registered.version,
        promoted=verdict.promote, aliases=aliases, verdict=verdict.label, reasons=verdict.reasons or verdict.passed,
        champion_before=champion.version if champion else None,
        champion_after=registered.version if verdict.promote else (champion.version if champion else None),
        metrics=evaluation.metrics, champion_metrics=champion_eval.metrics if champion_eval else {},
        reused=existing is not None)
    table = [{"metric": k, "challenger": round(v, 5),
              "champion": round(summary.champion_metrics[k], 5) if k in summary.champion_metrics else None}
             for k, v in sorted(evaluation.metrics.items())]
    publish_report(f"{model_name}-training", f"# {model_name}: {verdict.label}\n\n```\n{summary.render()}\n```\n\n"
                   f"MLflow run: {summary.run_url}", table, {"MLflow run": summary.run_url or ""})
    print(summary.render())
    return summary


def _quietly(step: Any, *args: Any) -> None:
    """Run a clean-up task on a failure path without hiding the original error (it is logged instead)."""
    try:
        step(*args)
    except Exception as exc:
        get_run_logger().warning("Clean-up %s failed after an earlier error: %s", step.name, exc)


def _train_and_register(mlflow_server: MlflowServer, experiment_id: str, run_id: str, model_name: str,
                        spec: TrainingSpec, policy: PromotionPolicy, split: SplitFiles, local_file: str,
                        dataset_path: str, target: str, lineage: dict[str, str],
                        model_dir: str) -> tuple[ModelVersionInfo, Evaluation]:
    """Train the trials, evaluate the best, log it and register it as a ``pending`` version (no alias yet)."""
    home = state_dir()
    source = f"{lineage[L.TAG_DATA_REPO]}/{dataset_path}@{lineage[L.TAG_DATA_REV]}"
    log_dataset_input(mlflow_server, run_id, local_file, source, dataset_path, target)
    trials = expand_trials(spec)
    # Cached results name files; if the files are gone, recompute and overwrite the cache entry.
    refresh = not trial_models_exist(split, target, spec, trials, model_dir)
    futures = train_trial.with_options(refresh_cache=refresh).map(
        unmapped(split), target, unmapped(spec), trials, list(range(len(trials))), model_dir)
    results = futures.result()
    log_trial_run.map(unmapped(mlflow_server), experiment_id, run_id, results, spec.estimator).result()
    best = select_best_trial(results, spec.metric())
    evaluation = evaluate_model(best.model_path, split.test, target, spec.task_type, split.features,
                                policy.slice_columns, policy.sensitive_attribute, policy.primary_metric,
                                policy.min_slice_rows, str(home / "cache" / "plots" / run_id))
    log_evaluation(mlflow_server, run_id, evaluation)
    model_uri = log_sklearn_model(mlflow_server, run_id, best.model_path, split.test, split.features)
    tags = {**lineage, TAG_PROMOTION_STATE: PENDING,
            L.TAG_PARAMS: json.dumps(best.params, sort_keys=True, default=str),
            L.TAG_FEATURES: json.dumps(split.features),
            L.TAG_TEST_METRICS: json.dumps(evaluation.metrics, sort_keys=True)}
    registered = register_model_version(mlflow_server, model_name, model_uri, run_id, tags)
    return registered, evaluation


def _gate_and_promote(mlflow_server: MlflowServer, model_name: str, registered: ModelVersionInfo,
                      evaluation: Evaluation, split: SplitFiles, target: str, spec: TrainingSpec,
                      policy: PromotionPolicy, lock: ModelLock, flow_run_id: str, data_rev: str, run_id: str,
                      resumed: bool) -> tuple[ModelVersionInfo | None, Evaluation | None, GateVerdict, list[str]]:
    """Under the model's lock: read the champion (fail closed), gate against it, move aliases, record the state."""
    logger = get_run_logger()
    champion = get_alias_version(mlflow_server, model_name, CHAMPION)  # read under the lock: the latest champion
    champion_eval: Evaluation | None = None
    if champion is not None and champion.version == registered.version:  # killed after the move, before "done"
        tag_model_version(mlflow_server, model_name, registered.version, {TAG_PROMOTION_STATE: DONE})
        verdict = GateVerdict(promote=True, reasons=[], champion_version=registered.tags.get(L.TAG_GATE_CHAMPION),
                              passed=["already champion: an earlier run moved the alias and was interrupted"])
        return None, None, verdict, [CHALLENGER, CHAMPION]
    if champion is not None:
        # A registry or network failure raises (RegistryError): it never reads as "no champion".
        champion_dir = download_model_version(mlflow_server, champion, model_cache_dir(mlflow_server))
        try:
            champion_eval = evaluate_model(champion_dir, split.test, target, spec.task_type, split.features,
                                           policy.slice_columns, policy.sensitive_attribute,
                                           policy.primary_metric, policy.min_slice_rows, label="champion")
        except TrainingConfigError as exc:
            logger.warning("Champion v%s cannot be scored on this test set (%s); the gate compares against "
                           "an empty champion record", champion.version, exc)
    verdict = gate_challenger(evaluation, champion_eval, policy, champion.version if champion else None)

    gate_tags = {L.TAG_GATE_VERDICT: verdict.label, L.TAG_GATE_REASONS: json.dumps(verdict.reasons or verdict.passed),
                 L.TAG_GATE_CHAMPION: verdict.champion_version or "none"}
    if resumed:
        gate_tags["mlops.promotion.resumed_by"] = flow_run_id
    tag_model_version(mlflow_server, model_name, registered.version, gate_tags)
    aliases = [CHALLENGER]
    set_model_alias(mlflow_server, model_name, CHALLENGER, registered.version, f"trained on data rev {data_rev[:12]}",
                    flow_run_id, lock=lock)
    if verdict.promote:
        set_model_alias(mlflow_server, model_name, CHAMPION, registered.version,
                        "passed the gate: " + "; ".join(verdict.passed), flow_run_id, lock=lock)
        aliases.append(CHAMPION)
        tag_model_version(mlflow_server, model_name, registered.version, {TAG_PROMOTION_STATE: DONE})
        emit_model_event(MODEL_PROMOTED, model_name, {
            "version": registered.version, "previous_version": champion.version if champion else None,
            "run_id": run_id, "reasons": verdict.passed})
    else:
        tag_model_version(mlflow_server, model_name, registered.version, {
            "mlops.rejected_reasons": "; ".join(verdict.reasons), TAG_PROMOTION_STATE: REJECTED})
        emit_model_event(MODEL_REJECTED, model_name, {
            "version": registered.version, "champion_version": champion.version if champion else None,
            "run_id": run_id, "reasons": verdict.reasons})
    return champion, champion_eval, verdict, aliases
