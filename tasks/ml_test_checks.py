"""The 28 tests of the ML Test Score (Breck et al. 2017) as checks of recorded evidence.

"The ML Test Score: A Rubric for ML Production Readiness and Technical Debt Reduction" (IEEE Big
Data 2017) lists 7 tests in each of 4 sections: features and data, model development, ML
infrastructure, monitoring. Each check here reads an :class:`Evidence` (gathered once from MLflow,
Prefect, the inference log and the project's tests by ``tasks/ml_test_score.py``) and returns a
:class:`Finding`: 1 point for automated evidence, 0 with the reason otherwise. A person's documented
check (0.5, manual) is added by the scorer. Every point names its evidence: a tag, an artifact, a
Prefect run or deployment, or a test file. The checks are pure functions: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

#: Section keys in report order, with their titles in the paper.
SECTIONS = {"data": "Tests for features and data", "model": "Tests for model development",
            "infra": "Tests for ML infrastructure", "monitoring": "Monitoring tests for ML"}

#: Item id -> (section, the paper's test title).
ITEMS: dict[str, tuple[str, str]] = {
    "data_1": ("data", "Feature expectations are captured in a schema"),
    "data_2": ("data", "All features are beneficial"),
    "data_3": ("data", "No feature's cost is too much"),
    "data_4": ("data", "Features adhere to meta-level requirements"),
    "data_5": ("data", "The data pipeline has appropriate privacy controls"),
    "data_6": ("data", "New features can be added quickly"),
    "data_7": ("data", "All input feature code is tested"),
    "model_1": ("model", "Model specs are reviewed and submitted"),
    "model_2": ("model", "Offline and online metrics correlate"),
    "model_3": ("model", "All hyperparameters have been tuned"),
    "model_4": ("model", "The impact of model staleness is known"),
    "model_5": ("model", "A simpler model is not better"),
    "model_6": ("model", "Model quality is sufficient on important data slices"),
    "model_7": ("model", "The model is tested for considerations of inclusion"),
    "infra_1": ("infra", "Training is reproducible"),
    "infra_2": ("infra", "Model specs are unit tested"),
    "infra_3": ("infra", "The ML pipeline is integration tested"),
    "infra_4": ("infra", "Model quality is validated before serving"),
    "infra_5": ("infra", "The model is debuggable"),
    "infra_6": ("infra", "Models are canaried before serving"),
    "infra_7": ("infra", "Serving models can be rolled back"),
    "monitoring_1": ("monitoring", "Dependency changes result in notification"),
    "monitoring_2": ("monitoring", "Data invariants hold for inputs"),
    "monitoring_3": ("monitoring", "Training and serving are not skewed"),
    "monitoring_4": ("monitoring", "Models are not too stale"),
    "monitoring_5": ("monitoring", "Models are numerically stable"),
    "monitoring_6": ("monitoring", "Computing performance has not regressed"),
    "monitoring_7": ("monitoring", "Prediction quality has not regressed"),
}

#: Items no recorded evidence can show, and why; a person's documented check earns 0.5 (manual).
CANNOT_AUTOMATE = {
    "data_3": "A feature's cost (serving latency and memory it adds, upstream data it depends on, upkeep) is not "
              "attributable from run metadata: it needs a per-feature ablation of the serving latency and a review "
              "of the feature's sources by a person.",
}


class Evidence(BaseModel):
    """What the checks read: one registry version, its run, and what the pipeline recorded around it."""

    model_name: str
    version: str
    run_id: str = ""
    version_tags: dict[str, str] = {}
    run_tags: dict[str, str] = {}
    run_params: dict[str, str] = {}
    artifacts: list[str] = []
    evaluation: dict[str, Any] = {}
    trials: int = 0
    aliases: list[str] = []
    champion_moves: int = 0
    reproductions: list[dict[str, str]] = []
    monitor_runs: list[dict[str, Any]] = []
    deployments: list[dict[str, Any]] = []
    inference_log: dict[str, Any] = {}
    contract: str | None = None
    tests_by_module: dict[str, list[str]] = {}
    test_files: list[str] = []
    private_paths: dict[str, str] = {}
    libraries_now: dict[str, str] = {}


class Finding(BaseModel):
    """One check's result: points, how the evidence was produced, what it is, and a note or reason."""

    points: float
    mode: str  # "automated", "manual" or "none"
    evidence: list[str] = []
    note: str = ""
    passed: bool | None = None


def auto(evidence: list[str], note: str = "", passed: bool | None = None) -> Finding:
    """Return a 1-point finding backed by automated evidence."""
    return Finding(points=1.0, mode="automated", evidence=evidence, note=note, passed=passed)


def missing(reason: str) -> Finding:
    """Return a 0-point finding with the reason."""
    return Finding(points=0.0, mode="none", note=reason)


def _tests(e: Evidence, *modules: str) -> list[str]:
    return sorted({t for m in modules for t in e.tests_by_module.get(m, [])})


def _present(e: Evidence, *paths: str) -> list[str]:
    return [p for p in paths if p in e.test_files]


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else str(value)


def _tag(e: Evidence, key: str) -> str | None:
    return e.version_tags.get(key) or e.run_tags.get(key)


def _monitored(e: Evidence, with_performance: bool = False) -> list[dict[str, Any]]:
    runs = [r for r in e.monitor_runs if r.get("state") == "COMPLETED" and r.get("version") in (None, e.version)]
    return [r for r in runs if r.get("performance")] if with_performance else runs


def _deployed(e: Evidence, flow: str) -> list[dict[str, Any]]:
    return [d for d in e.deployments if d.get("flow") == flow and (d.get("scheduled") or d.get("triggered"))]


def data_1(e: Evidence) -> Finding:
    """Check Data 1: Feature expectations are captured in a schema."""
    tests = _present(e, "tests/tasks/test_data_validation.py", "tests/blocks/test_data_contract.py")
    if not e.contract or not _tag(e, "mlops.data.rev"):
        return missing("no data contract is stored for the model, or the version has no validated data rev")
    return auto([f"contract {e.contract}", f"tag mlops.data.rev={_tag(e, 'mlops.data.rev')} (only data that "
                 "passed the contract is versioned)", *tests])


def data_2(e: Evidence) -> Finding:
    """Check Data 2: All features are beneficial."""
    importance = e.evaluation.get("importance") or {}
    if not importance:
        return missing("no permutation importance in evaluation/evaluation.json (the run logged no plots)")
    useless = sorted(k for k, v in importance.items() if v <= 0)
    return auto(["artifact evaluation/evaluation.json#importance",
                 *[a for a in e.artifacts if "importance" in a]],
                f"features with no positive importance: {', '.join(useless)}" if useless else
                f"all {len(importance)} features have positive permutation importance", passed=not useless)


def data_3(e: Evidence) -> Finding:
    """Check Data 3: No feature's cost is too much."""
    return missing(CANNOT_AUTOMATE["data_3"])


def data_4(e: Evidence) -> Finding:
    """Check Data 4: Features adhere to meta-level requirements."""
    roles = _tag(e, "mlops.column_roles")
    if not roles:
        return missing("the version has no mlops.column_roles tag (column roles were not recorded)")
    return auto(["tag mlops.column_roles (identifiers, free text and the target are kept out of the features)",
                 "tag mlops.features", *_present(e, "tests/blocks/test_data_contract.py",
                                                  "tests/tasks/test_datasets.py")])


def data_5(e: Evidence) -> Finding:
    """Check Data 5: The data pipeline has appropriate privacy controls."""
    if not e.private_paths:
        return missing("no data location of the pipeline (state folder, DVC remote, inference log) was found to check")
    exposed = sorted(p for p, mode in e.private_paths.items() if mode.endswith(("4", "5", "6", "7")))
    return auto([f"file modes of {', '.join(sorted(e.private_paths))}", "credentials are SecretStr block fields "
                 "(blocks/mlflow_server.py)"],
                f"readable by every local user: {', '.join(exposed)} (chmod o-rwx)" if exposed else
                "no data location is readable by other users", passed=not exposed)


def data_6(e: Evidence) -> Finding:
    """Check Data 6: New features can be added quickly."""
    tests = _present(e, "tests/test_dataset_matrix.py", "tests/tasks/test_datasets.py")
    if not _tag(e, "mlops.column_roles") or not tests:
        return missing("column roles are not inferred and recorded, or no test trains on new data sets")
    return auto(["tag mlops.column_roles (a new column's role is inferred and it joins the features)", *tests])


def data_7(e: Evidence) -> Finding:
    """Check Data 7: All input feature code is tested."""
    tests = _tests(e, "tasks.sklearn_preprocessing", "tasks.datasets")
    if not tests:
        return missing("no test imports the feature code (tasks/sklearn_preprocessing.py, tasks/datasets.py)")
    return auto(tests[:6])


def model_1(e: Evidence) -> Finding:
    """Check Model 1: Model specs are reviewed and submitted."""
    commit, dirty = _tag(e, "mlops.code.commit"), _tag(e, "mlops.code.dirty")
    if not _tag(e, "mlops.params") or not _tag(e, "mlops.estimator") or commit in (None, "unknown"):
        return missing("the version lacks mlops.estimator / mlops.params or a git commit of the code")
    return auto(["tags mlops.estimator, mlops.params", f"tag mlops.code.commit={commit[:12]}",
                 f"tag mlops.code.dirty={dirty}"],
                "the spec is recorded with the commit that trained it; its review happens in code review",
                passed=dirty == "false")


def model_2(e: Evidence) -> Finding:
    """Check Model 2: Offline and online metrics correlate."""
    runs = _monitored(e, with_performance=True)
    if not runs:
        return missing("no completed monitor-model run has compared the champion's online metric (labelled "
                       "traffic) with its test metric yet")
    return auto([f"monitor-model run {r['name']}: {r['message']}" for r in runs[:3]], passed=not any(
        "decay" in r.get("tags", []) for r in runs[:1]))


def model_3(e: Evidence) -> Finding:
    """Check Model 3: All hyperparameters have been tuned."""
    if e.trials < 2:
        return missing(f"{e.trials} trial run(s): the search space tried at most one setting")
    return auto([f"{e.trials} trial runs (mlflow.parentRunId={e.run_id})", "tag mlops.params (the best trial's)"])


def model_4(e: Evidence) -> Finding:
    """Check Model 4: The impact of model staleness is known."""
    runs = _monitored(e, with_performance=True)
    retrain = _deployed(e, "continuous-training")
    if not runs or not retrain:
        return missing("needs monitor-model runs measuring the champion's quality as it ages and a scheduled or "
                       "triggered retraining deployment; found " + f"{len(runs)} run(s), {len(retrain)} deployment(s)")
    return auto([f"monitor-model runs: {len(runs)}", *[f"deployment continuous-training/{d['name']}" for d in retrain]])


def model_5(e: Evidence) -> Finding:
    """Check Model 5: A simpler model is not better."""
    raw = _tag(e, "mlops.gate.baseline")
    if not raw:
        return missing("the gate recorded no baseline comparison (tag mlops.gate.baseline)")
    base = json.loads(raw)
    return auto(["tag mlops.gate.baseline", "run metrics baseline_*", *_present(
        e, "tests/tasks/test_promotion_gate.py")], f"{base.get('metric')}: challenger {_num(base.get('challenger'))} "
                f"vs {base.get('model')} {_num(base.get('baseline'))}", passed=bool(base.get("beaten")))


def model_6(e: Evidence) -> Finding:
    """Check Model 6: Model quality is sufficient on important data slices."""
    slices = e.evaluation.get("slice_gaps") or {}
    if not slices:
        return missing("no slice metrics: the promotion policy names no slice_columns present in the test data")
    return auto(["artifact evaluation/evaluation.json#slice_metrics", "run metrics slice_gap.*",
                 "tag mlops.gate.reasons"], "gaps: " + ", ".join(f"{k} {v:.3f}" for k, v in slices.items()))


def model_7(e: Evidence) -> Finding:
    """Check Model 7: The model is tested for considerations of inclusion."""
    fairness = e.evaluation.get("fairness") or {}
    if not fairness:
        return missing("no fairness measurement: the promotion policy names no sensitive_attribute present in the "
                       "test data")
    return auto(["artifact evaluation/evaluation.json#fairness", "run metrics fairness.*", "tag mlops.gate.reasons"],
                f"{fairness.get('metric', 'disparity')} on {fairness.get('attribute')}: {fairness.get('disparity')}")


def infra_1(e: Evidence) -> Finding:
    """Check Infra 1: Training is reproducible."""
    if not e.reproductions:
        return missing(f"no reproduce-model run of {e.model_name}:{e.version} (tag mlops.reproduces)")
    last = e.reproductions[0]
    return auto([f"reproduction run {last.get('run_id')}: mlops.reproduce.verdict={last.get('verdict')}, "
                 f"max relative delta {last.get('max_delta')}", *_present(e, "tests/flows/test_reproduce_model.py")],
                passed=last.get("verdict") == "reproduced")


def infra_2(e: Evidence) -> Finding:
    """Check Infra 2: Model specs are unit tested."""
    tests = sorted({*_present(e, "tests/tasks/test_sklearn_training.py"),
                    *_tests(e, "tasks.sklearn_spec")})
    return auto(tests[:6]) if tests else missing("no unit test of the training spec (tasks/sklearn_spec.py)")


def infra_3(e: Evidence) -> Finding:
    """Check Infra 3: The ML pipeline is integration tested."""
    tests = _present(e, "tests/test_continuous_training_loop.py", "tests/flows/test_continuous_training.py")
    return auto(tests) if tests else missing("no end-to-end test of the continuous-training loop")


def infra_4(e: Evidence) -> Finding:
    """Check Infra 4: Model quality is validated before serving."""
    verdict = _tag(e, "mlops.gate.verdict")
    if not verdict:
        return missing("the version has no gate verdict (tag mlops.gate.verdict)")
    smoke = [f"tag {k}" for k in ("mlops.deployment.deployed_at", "mlops.deployment.failed_reason")
             if k in e.version_tags]
    return auto([f"tag mlops.gate.verdict={verdict}", "tag mlops.gate.reasons", "tag mlops.gate.non_finite_predictions",
                 *smoke, *_present(e, "tests/tasks/test_promotion_gate.py")])


def infra_5(e: Evidence) -> Finding:
    """Check Infra 5: The model is debuggable."""
    need = ["mlops.data.rev", "mlops.data.md5", "mlops.code.commit", "mlops.prefect.flow_run_id", "mlops.libraries"]
    lacking = [k for k in need if not _tag(e, k)]
    if lacking:
        return missing(f"lineage tags missing: {', '.join(lacking)}")
    return auto([f"tags {', '.join(need)}", *[a for a in e.artifacts if a.startswith(("evaluation/", "plots/"))][:4]])


def infra_6(e: Evidence) -> Finding:
    """Check Infra 6: Models are canaried before serving."""
    staged = e.version_tags.get("mlops.rollout.infra_validation")
    if not staged:
        return missing("no staged rollout recorded (tag mlops.rollout.infra_validation): the model was not served "
                       "on a staging endpoint and load-tested before production")
    return auto([f"tag mlops.rollout.infra_validation={staged}", "tag mlops.rollout.infra_validation_reason",
                 *_present(e, "tests/flows/test_rollout_model.py")], e.version_tags.get(
                     "mlops.rollout.infra_validation_reason", ""), passed=staged == "passed")


def infra_7(e: Evidence) -> Finding:
    """Check Infra 7: Serving models can be rolled back."""
    if e.champion_moves < 1:
        return missing("no champion alias move is recorded for the model (mlops.alias_history.* tags)")
    return auto([f"{e.champion_moves} recorded champion moves (registered model tags mlops.alias_history.*)",
                 "flow rollback-model", *_present(e, "tests/flows/test_continuous_training.py")],
                "rollback needs an earlier champion" if e.champion_moves < 2 else "")


def monitoring_1(e: Evidence) -> Finding:
    """Check Monitor 1: Dependency changes result in notification."""
    raw = _tag(e, "mlops.libraries")
    if not raw:
        return missing("the version has no mlops.libraries tag: dependency changes cannot be detected")
    recorded = json.loads(raw)
    changed = sorted(k for k, v in recorded.items() if e.libraries_now.get(k, v) != v)
    return auto(["tag mlops.libraries", "reproduce-model warnings (mlops.reproduce.warnings)",
                 "this report's comparison with the running environment"],
                "changed since training: " + ", ".join(f"{k} {recorded[k]} -> {e.libraries_now[k]}" for k in changed)
                if changed else "no library changed since training", passed=not changed)


def monitoring_2(e: Evidence) -> Finding:
    """Check Monitor 2: Data invariants hold for inputs."""
    runs = _monitored(e)
    if not runs:
        return missing("no completed monitor-model run checked served inputs (missing values, ranges, new "
                       "categories) against the training data")
    return auto([f"monitor-model run {runs[0]['name']}", *[a for a in e.artifacts if a.startswith("monitoring/")][:2]])


def monitoring_3(e: Evidence) -> Finding:
    """Check Monitor 3: Training and serving are not skewed."""
    runs = _monitored(e)
    if not runs or not e.inference_log.get("files"):
        return missing("needs the inference log of served requests and a monitor-model drift run comparing it with "
                       f"the training data; found {e.inference_log.get('files', 0)} log file(s), {len(runs)} run(s)")
    return auto([f"inference log {e.inference_log.get('root')} ({e.inference_log['files']} files)",
                 f"monitor-model run {runs[0]['name']}: {runs[0].get('message')}"])


def monitoring_4(e: Evidence) -> Finding:
    """Check Monitor 4: Models are not too stale."""
    retrain = _deployed(e, "continuous-training")
    if not retrain:
        return missing("no scheduled or triggered continuous-training deployment on the Prefect server")
    return auto([f"deployment continuous-training/{d['name']}" for d in retrain])


def monitoring_5(e: Evidence) -> Finding:
    """Check Monitor 5: Models are numerically stable."""
    value = e.version_tags.get("mlops.gate.non_finite_predictions", e.evaluation.get("non_finite"))
    if value is None:
        return missing("no NaN/inf check of the predictions was recorded (tag mlops.gate.non_finite_predictions)")
    return auto([f"tag mlops.gate.non_finite_predictions={value}", "artifact evaluation/evaluation.json#non_finite",
                 *_present(e, "tests/tasks/test_promotion_gate.py")], passed=str(value) == "0")


def monitoring_6(e: Evidence) -> Finding:
    """Check Monitor 6: Computing performance has not regressed."""
    infra = sorted(k for k in e.version_tags if k.startswith("mlops.infra."))
    if not infra:
        return missing("no load test of the serving endpoint recorded (tags mlops.infra.*: requests per second, p99 "
                       "latency, memory)")
    passed = e.version_tags.get("mlops.rollout.infra_validation") == "passed"
    return auto([*[f"tag {k}={e.version_tags[k]}" for k in infra][:6],
                 *_present(e, "tests/tasks/test_infra_validation.py")], passed=passed)


def monitoring_7(e: Evidence) -> Finding:
    """Check Monitor 7: Prediction quality has not regressed."""
    runs = _monitored(e, with_performance=True)
    if not runs:
        return missing("no completed monitor-model run measured the champion's quality on labelled traffic")
    scheduled = _deployed(e, "monitor-model")
    return auto([f"monitor-model run {runs[0]['name']}: {runs[0].get('message')}",
                 *[f"deployment monitor-model/{d['name']}" for d in scheduled]],
                passed="decay" not in runs[0].get("tags", []))


#: Item id -> its check, in report order.
CHECKS: dict[str, Callable[[Evidence], Finding]] = {key: globals()[key] for key in ITEMS}
