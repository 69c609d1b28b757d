"""`make demo`: the whole continuous-training loop on embedded defaults, nothing to configure.

1. Start a local Prefect server (SQLite) and an ``mlflow server`` (SQLite + local artifacts),
   both on 127.0.0.1, state under ``.mlops/``.
2. Day 0: version a sample batch with DVC, validate, tune, track, register, promote ``champion``;
   roll it out: a bento served on staging (:3001), infra-validated there with a bounded load
   test, then served behind the stable production URL (:3000).
3. Serve the event-driven deployments (retrain on drift, staged rollout on promotion) from a runner.
4. Send simulated traffic for several days whose drift grows (ground truth arrives later);
   monitor each day with Evidently. When monitoring sees drift it emits an event; the
   automation starts retraining on the drifted, labelled traffic; the new model passes the
   gate, is promoted, and the promotion event rolls it out (staging, infra validation,
   production) while traffic keeps flowing.
5. Monitor again: clean. Reproduce the champion and score the pipeline (ML Test Score).
6. Print the timeline and the URLs; stop everything (unless ``--keep``).

    .venv/bin/python -m examples.demo [--keep]
    .venv/bin/python -m examples.demo --stop     # stop what a --keep run left running

The console shows the timeline only (Prefect's console handler at WARNING), while every flow
run, in this process or in the runner, still sends its INFO logs to the Prefect server.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = "churn-classifier"
STARTED = time.perf_counter()


def say(message: str) -> None:
    """Print one timeline line."""
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", flush=True)


class Traffic:
    """Background traffic: one record at a time, counting failures (a swap must drop none)."""

    def __init__(self, url: str, records: list[dict[str, Any]]) -> None:
        self.url, self.records = url, records
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=10.0) as client:
            i = 0
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self.url}/predict", json=self.records[i % len(self.records)])
                    ok = response.status_code == 200
                    if not ok:
                        self.errors.append(f"{response.status_code} {response.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    self.errors.append(repr(exc))
                self.sent += 1
                self.failed += not ok
                i += 1
                time.sleep(0.02)

    def start(self) -> Traffic:
        """Start sending."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending."""
        self._stop.set()
        self._thread.join(timeout=10)


def send_day(url: str, frame: Any, features: list[str], batch: int = 100) -> dict[str, int]:
    """Send one simulated day of traffic in batches; return request id -> true label."""
    import httpx

    labels: dict[str, int] = {}
    records = json.loads(frame[features].to_json(orient="records"))
    truth = frame["churned"].tolist()
    with httpx.Client(timeout=30.0) as client:
        for start in range(0, len(records), batch):
            response = client.post(f"{url}/predict", json=records[start:start + batch])
            response.raise_for_status()
            for request_id, label in zip(response.json()["request_ids"], truth[start:start + batch], strict=True):
                labels[request_id] = label
    return labels


def main() -> int:  # noqa: PLR0915 - a script that tells a story, step by step
    """Run the loop and print the timeline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the servers running at the end")
    parser.add_argument("--rows", type=int, default=3000, help="requests per simulated day")
    parser.add_argument("--stop", action="store_true", help="stop the servers a --keep run left running, and exit")
    args = parser.parse_args()

    # Quiet console, full run logs: only the console handler is raised to WARNING; the flow and task
    # run loggers keep INFO and send it to the Prefect server (the runner inherits this too).
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the timeline stays readable
    from deployments.processes import TELEMETRY_OFF

    for name, value in TELEMETRY_OFF.items():  # this process and every one it starts: no telemetry
        os.environ.setdefault(name, value)
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from blocks.settings import state_dir
    from deployments.processes import start_mlflow_server, start_prefect_server

    home = state_dir()
    if args.stop:
        return stop(home)
    say(f"state folder {home} (rm -rf it to start over)")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        prefect_future = pool.submit(start_prefect_server, home / "prefect", None, True)
        mlflow_future = pool.submit(start_mlflow_server, home / "mlflow-server")
        prefect_server, mlflow_server = prefect_future.result(), mlflow_future.result()
    api = f"{prefect_server.url}/api"
    os.environ["PREFECT_API_URL"] = api
    say(f"Prefect UI {prefect_server.url}   MLflow UI {mlflow_server.url}")
    runner = None
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api}):
            runner = story(args, home, api, mlflow_server.url)
    finally:
        if args.keep:
            keep(home, prefect_server, mlflow_server, runner)
        else:
            from flows.rollout_model import embedded_staging
            from tasks.serving_endpoint import stop_serving
            from tasks.system import stop_started

            if runner is not None:
                stop_started(runner, 60)
            stop_serving(None)
            stop_serving(embedded_staging())
            mlflow_server.stop()
            prefect_server.stop()
            say("stopped the runner, the production and staging model servers, MLflow and Prefect")
    return 0


def keep(home: Path, prefect_server: Any, mlflow_server: Any, runner: subprocess.Popen | None) -> None:
    """Record and list every process left running, with how to stop it."""
    from deployments.processes import record_kept
    from tasks.serving_endpoint import serving_status

    kept = {"Prefect server": (prefect_server.process.pid, prefect_server.url),
            "MLflow server": (mlflow_server.process.pid, mlflow_server.url)}
    record_kept(home, kept)  # recorded before anything else can fail: `--stop` finds them either way
    if runner is not None:
        # The story's runner serves only the two event-triggered deployments (a schedule firing mid-story
        # would change it); what is left running serves every deployment, so each can be run from the UI.
        from deployments.definitions import definitions, wait_for_triggers
        from tasks.system import stop_started

        stop_started(runner, 60)  # SIGTERM, then SIGKILL: a runner waits for its runs on SIGTERM

        from prefect.settings import PREFECT_API_URL, temporary_settings

        runner = start_runner(home, f"{prefect_server.url}/api", None)
        kept["deployment runner"] = (runner.pid, str(home / "runner.log"))
        record_kept(home, kept)
        served = [f"{d.flow_name}/{d.name}" for d in definitions(staged_rollout=True)]
        with temporary_settings({PREFECT_API_URL: f"{prefect_server.url}/api"}):  # the story's context has closed
            wait_for_triggers([f"{d.flow_name}/{d.name}" for d in definitions(staged_rollout=True) if d.triggers])
        say(f"the runner now serves every deployment ({len(served)}): {', '.join(served)}; run one with "
            f"PREFECT_API_URL={prefect_server.url}/api .venv/bin/prefect deployment run '{served[3]}'")
    path = record_kept(home, kept)
    status = serving_status(probe=False)
    say(f"--keep: left running (recorded in {path}):")
    for name, (pid, where) in kept.items():
        print(f"             {name:<18} PID {pid:<8} {where}")
    from flows.rollout_model import embedded_staging

    for where, state in (("model", status), ("staging", serving_status(embedded_staging(), probe=False))):
        for part in ("front", "backend"):
            info = state.get(part) or {}
            if info.get("pid") and info.get("alive"):
                print(f"             {where} {part:<{18 - len(where) - 1}} PID {info['pid']:<8} {state.get('url')}")
    print(f"  stop them: {sys.executable} -m examples.demo --stop   (or kill -TERM -<PID> for one of them)")


def stop(home: Path) -> int:
    """Stop what a ``--keep`` run left running: model endpoints (production, staging), runner, MLflow, Prefect."""
    from deployments.processes import stop_kept
    from flows.rollout_model import embedded_staging
    from tasks.serving_endpoint import stop_serving

    stopped = [*(stop_serving(None).get("stopped") or []), *(stop_serving(embedded_staging()).get("stopped") or [])]
    for what in stopped:
        print(f"model endpoint: stopped {what}")
    lines = stop_kept(home)
    for line in lines:
        print(line)
    if not stopped and not lines:
        print(f"nothing recorded as left running under {home}")
    return 0


def runner_env(api: str) -> dict[str, str]:
    """Environment of the demo's runner: its flow runs log at INFO (to the server and runner.log).

    The demo's own console is quiet (``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL=WARNING``), and a user
    may have set ``PREFECT_LOGGING_LEVEL=WARNING``; the runner and the flow-run processes it starts
    inherit the environment, so both are set back to INFO here, or runner-executed runs would show
    "This run didn't generate logs" in the UI.
    """
    return {**os.environ, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PREFECT_MLOPS_PROJECT": str(ROOT), "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO"}


def start_runner(home: Path, api: str, only: str | None) -> subprocess.Popen:
    """Start ``prefect-mlops serve`` for the demo's blocks (``only``: the deployments to serve, None: all)."""
    env = runner_env(api)
    log = open(home / "runner.log", "ab")  # noqa: SIM115 - closed with the process
    command = [sys.executable, "-m", "deployments.cli", "serve", "--cooldown-seconds", "600", "--staged-rollout",
               "--param", "mlflow_block=demo-mlflow", "--param", "policy_block=demo-policy",
               *(["--only", only] if only else [])]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def story(args: argparse.Namespace, home: Path, api: str, mlflow_url: str) -> subprocess.Popen:
    """The loop itself; returns the runner process (stopped by the caller)."""
    from blocks.mlflow_server import MlflowServer
    from blocks.promotion_policy import PromotionPolicy
    from flows.continuous_training import continuous_training
    from flows.ml_test_score import ml_test_score
    from flows.monitor_model import monitor_model
    from flows.reproduce_model import reproduce_model
    from flows.rollout_model import rollout_model
    from tasks.inference_log import attach_ground_truth
    from tasks.sample_data import make_customer_frame
    from tasks.serving_endpoint import serving_status
    from tasks.sklearn_training import TrainingSpec
    from tasks.system import wait_until

    MlflowServer(tracking_uri=mlflow_url, experiment_name="demo").save("demo-mlflow", overwrite=True)
    incoming = home / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    day0 = incoming / "day0.parquet"
    make_customer_frame(8000, seed=42, day=0).to_parquet(day0, index=False)
    spec = TrainingSpec(search_space={"C": [0.1, 1.0]})
    # The gate also compares slices (region) and fairness (gender), with recorded limits.
    PromotionPolicy(slice_columns=["region"], max_slice_gap=0.3, sensitive_attribute="gender",
                    max_disparity=0.3).save("demo-policy", overwrite=True)
    summary = continuous_training(data_file=str(day0), training=spec, mlflow_block="demo-mlflow",
                                  policy_block="demo-policy")
    say(f"day 0: data rev {summary.data_rev[:10]} -> MLflow run {summary.run_id[:10]} -> {MODEL} "
        f"v{summary.model_version} {summary.verdict} (roc_auc {summary.metrics['roc_auc']:.3f})")
    rolled = rollout_model(mlflow_block="demo-mlflow")  # staging, infra validation, then production
    url = rolled.production_url
    say(f"staging v{rolled.model_version} at {rolled.staging_url} -> {rolled.infra_validation} -> "
        f"production v{rolled.model_version} at {url}")

    runner = start_runner(home, api, "on-drift,on-promotion")
    from deployments.definitions import wait_for_triggers

    wait_for_triggers(["continuous-training/on-drift", "rollout-model/on-promotion", "deploy-model/on-promotion"])
    say("runner serves continuous-training/on-drift, rollout-model/on-promotion (staged rollout) and "
        "deploy-model/on-promotion (rollbacks): event triggers")

    features = json.loads(summary_features(mlflow_url, summary.model_version))
    background = Traffic(url, json.loads(make_customer_frame(200, seed=7, day=9)[features].to_json(
        orient="records"))).start()
    retrained_at = None
    logged = 0
    try:
        for day, drift in ((1, 0.0), (2, 0.8), (3, 0.8)):
            day_start = dt.datetime.now(dt.UTC)
            frame = make_customer_frame(args.rows, seed=100 + day, day=day, covariate_drift=drift,
                                        concept_drift=drift)
            labels = send_day(url, frame, features)
            attach_ground_truth(None, MODEL, labels)
            logged += len(labels)
            wait_until(lambda n=logged: _written(serving_status()) >= n, 60, "the inference log to be written",
                       interval=1.0, ignore=())
            hours = (dt.datetime.now(dt.UTC) - day_start).total_seconds() / 3600 + 1e-3
            result = monitor_model(window_hours=hours, mlflow_block="demo-mlflow")
            drifted = ", ".join(result.drift.drifted_columns) if result.drift else "-"
            say(f"day {day}: {len(labels)} requests (drift {drift}) -> monitor v{result.champion_version}: "
                f"{result.verdict}; drifted: {drifted}; events: {', '.join(result.events) or '-'}")
            if result.events and retrained_at is None:
                before = result.champion_version
                say("waiting for the automation: retrain on the drifted traffic, gate, promote, deploy ...")
                status = wait_until(lambda b=before: _serving_newer(serving_status(), b), 240,
                                    "the retrained champion to serve", interval=1.0, ignore=())
                retrained_at = time.perf_counter()
                say(f"v{status['model_version']} went through staging: "
                    f"{rollout_line(mlflow_url, str(status['model_version']))}")
                say(f"v{status['model_version']} serves at {url} now (bento {status['bento']}); "
                    f"background traffic: {background.sent} requests, {background.failed} failed")
    finally:
        background.stop()
    say(f"background traffic over the whole demo: {background.sent} requests, {background.failed} failed")
    reproduced = reproduce_model(mlflow_block="demo-mlflow")
    deltas = [abs(c.relative) for c in reproduced.comparison if c.relative is not None]
    say(f"reproduce-model v{reproduced.version} from data rev {reproduced.data_rev[:10]}: {reproduced.verdict} "
        f"(largest metric difference {max(deltas, default=0.0):.2%})")
    score = ml_test_score(mlflow_block="demo-mlflow")
    say(f"ml-test-score v{score.version}: {score.description}")
    reports = sorted((home / "reports" / MODEL).glob("*/drift.html"))
    print()
    print(f"Prefect UI   {api.removesuffix('/api')}")
    print(f"MLflow UI    {mlflow_url}/#/models/{MODEL}")
    print(f"Reports      {reports[-1].parent.parent if reports else home / 'reports'}")
    print("Endpoint (up while the demo runs; `python -m examples.demo --keep` leaves it up):")
    print(f"             curl -s -X POST {url}/predict -H 'content-type: application/json' "
          f"-d '{json.dumps(json.loads(make_customer_frame(1, seed=1)[features].to_json(orient='records'))[0])}'")
    if background.failed:
        print("failed background requests:", background.errors[:5])
    return runner


def rollout_line(mlflow_url: str, version: str) -> str:
    """The staged rollout of a version as recorded on it: staging URL, infra-validation figures, stage."""
    from mlflow import MlflowClient

    from tasks.system import wait_until

    client = MlflowClient(tracking_uri=mlflow_url)
    # The endpoint answers with the new version a moment before rollout-model records the stage.
    tags = wait_until(lambda: client.get_model_version(MODEL, version).tags, 60, f"v{version}'s rollout stage",
                      interval=0.5, done=lambda t: "mlops.rollout.stage" in t)
    figures = {k.removeprefix("mlops.infra."): v for k, v in tags.items() if k.startswith("mlops.infra.")}
    return (f"{tags.get('mlops.rollout.staging_url', '-')} -> infra validation "
            f"{tags.get('mlops.rollout.infra_validation', '-')} ({figures.get('rps', '?')} rps, p99 "
            f"{figures.get('p99_ms', '?')} ms, {figures.get('errors', '?')} errors, {figures.get('memory_mb', '?')} MB)"
            f" -> {tags.get('mlops.rollout.stage', '-')}")


def summary_features(mlflow_url: str, version: str) -> str:
    """Return the feature list recorded on a registered version."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_url).get_model_version(MODEL, version).tags["mlops.features"]


def _written(status: dict[str, Any]) -> int:
    return int((status.get("inference_log") or {}).get("written", 0))


def _serving_newer(status: dict[str, Any], before: str | None) -> dict[str, Any] | None:
    answering = (status.get("answering") or {}).get("model_version")
    if status.get("state") == "serving" and answering and str(answering) != str(before):
        return status
    return None


if __name__ == "__main__":
    sys.exit(main())
