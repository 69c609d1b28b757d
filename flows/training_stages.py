"""The stages of ``continuous-training`` after the data stage: tune and register, then gate and promote.

``tune_and_register`` fits the trials in the ``tune-trials`` subflow (``flows/tuning.py``: its own task
runner; only trials whose model file is missing are refit), evaluates the best
one, logs it and registers it as a *pending* version (no alias yet). ``gate_and_promote`` runs under
the model's registry lock: it re-reads the champion (failing closed on registry errors), scores it on
the challenger's test set, applies the gate and moves the aliases, recording the promotion state
(``pending`` -> ``done`` / ``rejected``) so that a run killed in between is completed by the next one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, unmapped

from blocks.mlflow_server import MlflowServer
from blocks.promotion_policy import ResolvedPolicy
from flows.common import model_cache_dir
from flows.tuning import TrialRunner, run_trials
from tasks import lineage as L
from tasks.events import MODEL_PROMOTED, MODEL_REJECTED, emit_model_event
from tasks.ml_test_score import recorded_ml_test_score
from tasks.mlflow_alias_history import set_model_alias
from tasks.mlflow_locks import ModelLock
from tasks.mlflow_pages import publish_version_page
from tasks.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    DONE,
    PENDING,
    REJECTED,
    TAG_PROMOTION_STATE,
    ModelVersionInfo,
    download_model_version,
    get_alias_version,
    register_model_version,
    tag_model_version,
)
from tasks.mlflow_tracking import log_dataset_input, log_evaluation, log_sklearn_model, log_trial_run
from tasks.model_evaluation import Evaluation, evaluate_champion, evaluate_model
from tasks.prefect_assets import data_asset, model_asset, record_materialization
from tasks.promotion_gate import GateVerdict, gate_challenger
from tasks.sklearn_spec import TaskInfo, TrainingSpec
from tasks.sklearn_training import SplitFiles, select_best_trial


def scoring_options(rules: ResolvedPolicy, task: TaskInfo) -> dict[str, Any]:
    """Return the evaluation options shared by the challenger and the champion (same rules, same labels)."""
    return {"slice_columns": rules.slice_columns, "sensitive_attribute": rules.sensitive_attribute,
            "primary_metric": rules.primary_metric, "min_slice_rows": rules.min_slice_rows,
            "classes": task.classes, "positive_label": task.positive_label, "fairness_metric": rules.fairness_metric}


def quietly(step: Any, *args: Any) -> None:
    """Run a clean-up task on a failure path without hiding the original error (it is logged instead)."""
    try:
        step(*args)
    except Exception as exc:  # noqa: BLE001 - the original error is the one to raise
        get_run_logger().warning("Clean-up %s failed after an earlier error: %s", getattr(step, "name", step), exc)


def tune_and_register(mlflow_server: MlflowServer, experiment_id: str, run_id: str, model_name: str,
                      spec: TrainingSpec, task: TaskInfo, rules: ResolvedPolicy, split: SplitFiles, local_file: str,
                      dataset_path: str, target: str, lineage: dict[str, str], model_dir: str,
                      plot_dir: str, runner: TrialRunner | None = None) -> tuple[ModelVersionInfo, Evaluation]:
    """Tune (the ``tune-trials`` subflow on ``runner``), evaluate the best trial, log it, register it ``pending``."""
    source = f"{lineage[L.TAG_DATA_REPO]}/{dataset_path}@{lineage[L.TAG_DATA_REV]}"
    digest = log_dataset_input(mlflow_server, run_id, local_file, source, dataset_path, target)
    # One task per trial in the tune-trials subflow, on its own task runner (threads, sequential or Dask);
    # only trials whose model file is missing are refit (resume after a crash). The rest stays on this flow's.
    results = run_trials(split, target, spec, model_dir, task, runner or TrialRunner())
    log_trial_run.map(unmapped(mlflow_server), experiment_id, run_id, results, spec.estimator).result()
    best = select_best_trial(results, spec.metric(task.task_type))
    evaluation = evaluate_model(best.model_path, split.test, target, task.task_type, split.features,
                                plot_dir=plot_dir, train_file=split.train, **scoring_options(rules, task))
    # The LoggedModel first, so that its test metrics are linked to it and to the training dataset.
    model_uri = log_sklearn_model(mlflow_server, run_id, best.model_path, split.test, split.features,
                                  params=best.params)
    log_evaluation(mlflow_server, run_id, evaluation, model_id=model_uri, dataset_name=dataset_path,
                   dataset_digest=digest)
    tags = {**lineage, TAG_PROMOTION_STATE: PENDING,
            L.TAG_PARAMS: json.dumps(best.params, sort_keys=True, default=str),
            L.TAG_FEATURES: json.dumps(split.features), L.TAG_TIME_COLUMN: split.time_column or "",
            L.TAG_COLUMN_ROLES: json.dumps(split.column_roles or split.roles),
            L.TAG_TEST_METRICS: json.dumps(evaluation.metrics, sort_keys=True)}
    registered = register_model_version(mlflow_server, model_name, model_uri, run_id, tags)
    record_materialization(model_asset(mlflow_server.registry_uri or mlflow_server.tracking_uri, model_name),
                           model_name, "mlflow", {"version": registered.version, "run_id": run_id,
                                                  "model_id": registered.model_id},
                           upstream=[data_asset(lineage[L.TAG_DATA_REPO], dataset_path)], url=mlflow_server.ui_url())
    return registered, evaluation


def evaluate_registered(mlflow_server: MlflowServer, version: ModelVersionInfo, split: SplitFiles, target: str,
                        task: TaskInfo, rules: ResolvedPolicy) -> Evaluation:
    """Evaluate an already registered (pending) version again, to gate it after an interrupted run."""
    model_dir = download_model_version(mlflow_server, version, model_cache_dir(mlflow_server))
    return evaluate_model(model_dir, split.test, target, task.task_type, split.features, train_file=split.train,
                          **scoring_options(rules, task))


def gate_and_promote(mlflow_server: MlflowServer, model_name: str, registered: ModelVersionInfo,
                     evaluation: Evaluation, split: SplitFiles, target: str, task: TaskInfo, rules: ResolvedPolicy,
                     lock: ModelLock, flow_run_id: str, data_rev: str, run_id: str, resumed: bool,
                     on_promoted: Callable[[], Any] | None = None,
                     ) -> tuple[ModelVersionInfo | None, Evaluation | None, GateVerdict, list[str]]:
    """Under the model's lock: read the champion (fail closed), gate against it, move aliases, record the state.

    ``on_promoted`` runs right after the promotion event, before the version page's plots (the
    bento pre-build and standby start: ``benchmarks/bench_loop.py --verbose`` shows 0.8-1.7 s gained).
    """
    champion = get_alias_version(mlflow_server, model_name, CHAMPION)  # read under the lock: the latest champion
    if champion is not None and champion.version == registered.version:  # killed after the move, before "done"
        tag_model_version(mlflow_server, model_name, registered.version, {TAG_PROMOTION_STATE: DONE})
        verdict = GateVerdict(promote=True, reasons=[], champion_version=registered.tags.get(L.TAG_GATE_CHAMPION),
                              passed=["already champion: an earlier run moved the alias and was interrupted"])
        return None, None, verdict, [CHALLENGER, CHAMPION]
    champion_eval, unscorable = None, None
    if champion is not None:
        # A registry or download error raises here (nothing promoted); only a champion that genuinely
        # cannot score this test set comes back as `unscorable`, for the gate's policy.
        champion_dir = download_model_version(mlflow_server, champion, model_cache_dir(mlflow_server))
        score = evaluate_champion(champion_dir, split.test, target, task.task_type, split.features,
                                  **scoring_options(rules, task))
        champion_eval, unscorable = score.evaluation, score.unscorable
    score = recorded_ml_test_score(mlflow_server, model_name) if rules.min_ml_test_score is not None else None
    verdict = gate_challenger(evaluation, champion_eval, rules, champion.version if champion else None, unscorable,
                              score)
    gate_tags = {L.TAG_GATE_VERDICT: verdict.label, L.TAG_GATE_REASONS: json.dumps(verdict.stated_reasons),
                 L.TAG_GATE_CHAMPION: verdict.champion_version or "none", **verdict.tags()}
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
            "run_id": run_id, "reasons": verdict.passed}, key=f"v{registered.version}")
        if on_promoted is not None:
            on_promoted()
    else:
        tag_model_version(mlflow_server, model_name, registered.version, {
            "mlops.rejected_reasons": "; ".join(verdict.reasons), TAG_PROMOTION_STATE: REJECTED})
        emit_model_event(MODEL_REJECTED, model_name, {
            "version": registered.version, "champion_version": champion.version if champion else None,
            "run_id": run_id, "reasons": verdict.reasons}, key=f"v{registered.version}")
    publish_version_page(mlflow_server, registered, evaluation, champion_eval, verdict)
    return champion, champion_eval, verdict, aliases
