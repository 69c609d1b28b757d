"""Loop latency: "new data versioned" -> "new champion answering", with services already running.

Starts a Prefect server, an ``mlflow server``, a first champion serving on a free port and a
runner with ``continuous-training/on-new-data`` and ``deploy-model/on-promotion``; then, per
repeat, drops a new data batch, runs ``watch-data`` (which versions it and emits the event)
and times each stage until the stable URL answers with the new version. Prints the median of
each stage and of the whole loop.

    .venv/bin/python benchmarks/bench_loop.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "bench-loop"


def _new_answering(status: dict, before: str) -> str | None:
    """Return the model version the endpoint answers with when it is not ``before`` (else None)."""
    answering = (status.get("answering") or {}).get("model_version")
    return str(answering) if answering is not None and str(answering) != before else None


def stage_times(since: float, verbose: bool = False) -> str:
    """The flow runs created since ``since`` (epoch s): created, started and ended, in seconds after it."""
    from prefect import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    rows = []
    with get_client(sync_client=True) as client:
        flows: dict = {}
        for run in client.read_flow_runs(limit=20, sort=FlowRunSort.EXPECTED_START_TIME_DESC):
            if run.created is None or run.created.timestamp() < since - 1:
                continue
            if run.flow_id not in flows:
                flows[run.flow_id] = client.read_flow(run.flow_id).name

            def at(t: object) -> str:
                return f"{t.timestamp() - since:5.1f}" if t is not None else "    -"  # type: ignore[attr-defined]

            rows.append((run.created.timestamp(), f"    {flows[run.flow_id]:<22} created {at(run.created)}  "
                                                  f"started {at(run.start_time)}  ended {at(run.end_time)}"))
            if verbose:
                from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

                for task in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))):
                    if task.start_time and task.end_time and (task.end_time - task.start_time).total_seconds() > 0.3:
                        rows.append((task.start_time.timestamp(), f"      {task.name:<32} started "
                                     f"{at(task.start_time)}  ended {at(task.end_time)}"))
    return "\n".join(r for _, r in sorted(rows))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="also print the task runs longer than 0.3 s")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    os.environ.update({"PREFECT_MLOPS_HOME": str(home / "state"), "PREFECT_LOGGING_LEVEL": "WARNING",
                       "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"})
    from deployments.processes import start_mlflow_server, start_prefect_server
    from tasks.system import free_port, stop_started, wait_until

    prefect_server = start_prefect_server(home / "prefect", ui=False, scheduler_loop_s=2)
    mlflow_server = start_mlflow_server(home / "mlflow")
    api = f"{prefect_server.url}/api"
    os.environ["PREFECT_API_URL"] = api
    runner = None
    serving = None
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api}):
            from blocks.bentoml_serving import BentoMLServing
            from blocks.mlflow_server import MlflowServer
            from blocks.promotion_policy import PromotionPolicy
            from flows.continuous_training import continuous_training
            from flows.deploy_model import deploy_model
            from flows.watch_data import incoming_file, watch_data
            from tasks.sample_data import make_customer_frame
            from tasks.serving_endpoint import serving_status
            from tasks.sklearn_training import TrainingSpec

            MlflowServer(tracking_uri=mlflow_server.url).save("bench-mlflow", overwrite=True)
            # Latency, not model quality, is measured: every challenger is promoted.
            PromotionPolicy(min_improvement=-1.0, guard_metrics={}, floors={}).save("bench-always", overwrite=True)
            serving = BentoMLServing.embedded(port=free_port())
            serving.save("bench-serving", overwrite=True)
            kwargs = dict(model_name=MODEL, mlflow_block="bench-mlflow")
            first = home / "day0.parquet"
            make_customer_frame(5000, seed=1).to_parquet(first, index=False)
            continuous_training(data_file=str(first), training=TrainingSpec(search_space={"C": [1.0]}), **kwargs)
            deploy_model(serving_block="bench-serving", **kwargs)
            env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_MLOPS_PROJECT": str(ROOT)}
            log = open(home / "runner.log", "ab")  # noqa: SIM115
            runner = subprocess.Popen(
                [sys.executable, "-m", "deployments.cli", "serve", "--only", "on-new-data,on-promotion",
                 "--cooldown-seconds", "6", "--param", "mlflow_block=bench-mlflow", "--param",
                 "serving_block=bench-serving", "--param", "policy_block=bench-always"], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            from deployments.definitions import wait_for_triggers

            wait_for_triggers(["continuous-training/on-new-data", "deploy-model/on-promotion"])
            totals, watch_times = [], []
            for repeat in range(args.repeats):
                before = str(serving_status(serving)["model_version"])
                drop = incoming_file(MODEL)
                drop.parent.mkdir(parents=True, exist_ok=True)
                make_customer_frame(5000, seed=100 + repeat, day=repeat + 1, concept_drift=0.5 * (repeat + 1)
                                    ).to_parquet(drop, index=False)
                started, wall = time.perf_counter(), time.time()
                result = watch_data(incoming_path=str(drop), **kwargs)
                watch_times.append(time.perf_counter() - started)
                assert result.changed, result
                answering = wait_until(
                    lambda b=before: _new_answering(serving_status(serving), b), 300,
                    f"repeat {repeat}: a new champion answering (see {home}/runner.log)", interval=0.25, ignore=())
                totals.append(time.perf_counter() - started)
                print(f"repeat {repeat}: v{before} -> v{answering} answering {totals[-1]:.1f} s after the drop "
                      f"(watch-data {watch_times[-1]:.1f} s)", flush=True)
                print(stage_times(wall, args.verbose), flush=True)
                time.sleep(7)  # past the on-new-data cool-down
            print(f"\nloop latency, new data dropped -> new champion answering, median of {args.repeats}: "
                  f"{statistics.median(totals):.1f} s (watch-data + versioning {statistics.median(watch_times):.1f} s;"
                  f" the rest: event -> runner -> continuous-training -> promotion event -> deploy-model)")
    finally:
        if runner is not None:
            stop_started(runner, 60)
        if serving is not None:
            from tasks.serving_endpoint import stop_serving

            stop_serving(serving)
        mlflow_server.stop()
        prefect_server.stop()


if __name__ == "__main__":
    main()
