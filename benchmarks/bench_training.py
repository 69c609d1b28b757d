"""Continuous-training flow vs the same steps as plain function calls, in one run.

Prints the median wall time of each (fresh state per run, so nothing is served from a
cache), their ratio, and the fixed overhead per run measured on a tiny dataset.

    .venv/bin/python benchmarks/bench_training.py [--rows 300000] [--repeats 3]

Goal (issue 2): ratio <= 1.10 on >= 20 s of real work; fixed overhead <= 2 s per run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from blocks.dvc_repository import DvcRepository  # noqa: E402
from blocks.mlflow_server import MlflowServer  # noqa: E402
from blocks.promotion_policy import PromotionPolicy  # noqa: E402
from flows.continuous_training import continuous_training, training_key  # noqa: E402
from tasks import data_validation as dv  # noqa: E402
from tasks import (  # noqa: E402
    dvc_data,
    lineage,
    mlflow_alias_history,
    mlflow_registry,
    mlflow_tracking,
    model_evaluation,
    promotion_gate,
)
from tasks import sklearn_training as st  # noqa: E402
from tasks.sample_data import make_customer_frame  # noqa: E402


def plain(data_file: str, spec: st.TrainingSpec, model_name: str) -> None:
    """The flow's steps as plain function calls (``task.fn``), sequentially."""
    from blocks.settings import state_dir

    home = state_dir()
    mlflow_server, repo, policy = MlflowServer.embedded(), DvcRepository.embedded(), PromotionPolicy()
    st.expand_trials(spec)
    experiment_id = mlflow_tracking.check_tracking_server.fn(mlflow_server)
    tags = lineage.code_version()
    dvc_data.init_data_repo.fn(repo)
    version = dvc_data.version_dataset.fn(repo, data_file, "data/train.parquet")
    local = dvc_data.pull_dataset.fn(repo, "data/train.parquet", version.rev, str(home / "cache" / "data"))
    contract = dv.resolve_data_contract.fn(local, str(home / "contracts" / f"{model_name}.json"), "churned")
    dv.validate_dataset.fn(local, contract).raise_for_violations()
    key = training_key(version.md5, spec, "churned", policy.model_dump_json())
    champion = mlflow_registry.get_alias_version.fn(mlflow_server, model_name)
    mlflow_registry.find_version_by_tag.fn(mlflow_server, model_name, lineage.TAG_TRAINING_KEY, key)
    run_id = mlflow_tracking.start_pipeline_run.fn(mlflow_server, experiment_id, "plain", tags, spec.params or {})
    digest = mlflow_tracking.log_dataset_input.fn(mlflow_server, run_id, local, "src", "data", "churned")
    split = st.split_dataset.fn(local, "churned", spec, str(home / "cache" / "splits"))
    trials = st.expand_trials(spec)
    results = [st.train_trial.fn(split, "churned", spec, p, i, str(home / "cache" / "models"))
               for i, p in enumerate(trials)]
    for result in results:
        mlflow_tracking.log_trial_run.fn(mlflow_server, experiment_id, run_id, result, spec.estimator)
    best = st.select_best_trial.fn(results, spec.metric())
    evaluation = model_evaluation.evaluate_model.fn(best.model_path, split.test, "churned", spec.task_type,
                                                    split.features, [], None, "roc_auc", 30,
                                                    str(home / "cache" / "plots"))
    verdict = promotion_gate.gate_challenger.fn(evaluation, None, policy, None)
    uri = mlflow_tracking.log_sklearn_model.fn(mlflow_server, run_id, best.model_path, split.test, split.features,
                                               params=best.params)
    mlflow_tracking.log_evaluation.fn(mlflow_server, run_id, evaluation, model_id=uri, dataset_name="data",
                                      dataset_digest=digest)
    version_info = mlflow_registry.register_model_version.fn(mlflow_server, model_name, uri, run_id, tags)
    mlflow_alias_history.set_model_alias.fn(mlflow_server, model_name, "challenger", version_info.version, "bench")
    if verdict.promote and champion is None:
        mlflow_alias_history.set_model_alias.fn(mlflow_server, model_name, "champion", version_info.version, "bench")
    mlflow_tracking.finish_pipeline_run.fn(mlflow_server, run_id)


def timed(mode: str, data_file: str, spec: st.TrainingSpec, workers: int | None) -> float:
    """Run one mode in a fresh state folder and return its wall time."""
    home = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-"))
    os.environ["PREFECT_MLOPS_HOME"] = str(home)
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(home / "prefect-results")
    started = time.perf_counter()
    if mode == "plain":
        plain(data_file, spec, "bench")
    else:
        flow = continuous_training.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))
        flow(data_file=data_file, model_name="bench", training=spec)
    return time.perf_counter() - started


def measure(data_file: str, spec: st.TrainingSpec, repeats: int) -> dict[str, float]:
    """Median times of plain calls, the flow with one worker, and the flow with default workers."""
    times: dict[str, list[float]] = {"plain": [], "flow-1-worker": [], "flow-parallel": []}
    for _ in range(repeats):
        times["plain"].append(timed("plain", data_file, spec, None))
        times["flow-1-worker"].append(timed("flow", data_file, spec, 1))
        times["flow-parallel"].append(timed("flow", data_file, spec, None))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    big, tiny = work / "big.parquet", work / "tiny.parquet"
    make_customer_frame(args.rows, seed=7).to_parquet(big, index=False)
    make_customer_frame(2000, seed=7).to_parquet(tiny, index=False)
    heavy = st.TrainingSpec(estimator="sklearn.ensemble.RandomForestClassifier",
                            params={"n_estimators": 40, "n_jobs": 1, "min_samples_leaf": 20},
                            search_space={"max_depth": [8, 12]})
    light = st.TrainingSpec(search_space={"C": [1.0]})
    timed("plain", str(tiny), light, None)  # warm imports and caches before measuring
    timed("flow", str(tiny), light, None)
    small = measure(str(tiny), light, args.repeats)
    large = measure(str(big), heavy, args.repeats)
    print(f"\ncontinuous-training, median of {args.repeats} runs, fresh state each run (seconds)")
    print(f"{'data':<28}{'plain calls':>12}{'flow 1 worker':>15}{'flow parallel':>15}{'ratio 1w':>10}"
          f"{'ratio par':>10}")
    for label, row in ((f"{args.rows:,} rows, RF 2 trials", large), ("2,000 rows, LR 1 trial", small)):
        print(f"{label:<28}{row['plain']:>12.2f}{row['flow-1-worker']:>15.2f}{row['flow-parallel']:>15.2f}"
              f"{row['flow-1-worker'] / row['plain']:>10.3f}{row['flow-parallel'] / row['plain']:>10.3f}")
    print(f"fixed overhead per flow run (tiny data, 1 worker - plain): "
          f"{small['flow-1-worker'] - small['plain']:.2f} s")
    print(json.dumps({"large": large, "small": small}))


if __name__ == "__main__":
    main()
