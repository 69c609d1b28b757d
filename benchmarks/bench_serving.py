"""Serving throughput in one run: our endpoint vs ``mlflow models serve`` vs in-process predict.

    .venv/bin/python benchmarks/bench_serving.py [--duration 5] [--connections 1,8,32] [--models lr,rf]

For a LogisticRegression and a RandomForest trained by the continuous-training flow, at batch
size 1 (one record per request) and 1 / 8 / 32 keep-alive connections, it measures requests
per second and p50 / p99 latency of:

* ``ours``: the endpoint the deploy-model flow starts (stable front -> ``bentoml serve``,
  adaptive batching), with inference logging on;
* ``mlflow``: ``mlflow models serve --env-manager local`` on the same registered version;
* ``in-process``: ``model.predict(<one-row DataFrame>)`` calls per second in one thread, the
  limit of any server that scores one request at a time.

Load comes from a separate process (``tasks/http_load.py``: an asyncio HTTP/1.1 client over raw keep-alive sockets,
uvloop when installed), bounded in time and in request count, to 127.0.0.1 only. The servers
run one at a time, so they never compete for the two cores.

Goal (issue 3): LR at 8 connections, ours >= 5x ``mlflow models serve`` and p99 <= 50 ms.

Variants of our backend measured in the same run (``--variants journal,no-journal --repeat 3``): each is a
``bentoml serve`` of the same bento started with settings overridden through ``$MLOPS_SERVING_OVERRIDES``,
loaded directly (no front), the variants interleaved ``--repeat`` times; the table gives the median rps and p99
of each and the ratio to the first variant. The machine is shared and noisy: compare variants of one run only.

* ``journal`` / ``no-journal``: every prediction written to the inference log's journal before the answer
  (survives SIGKILL), or buffered in memory (lost if the process dies);
* ``no-batching``: ``max_batch_size=1`` (why the micro-batcher exists);
* ``no-timeout-patch``: BentoML's TimeoutMiddleware left as shipped (why the patch exists; run it with
  ``--duration 60 --connections 32`` to see the effect on p99);
* ``in-loop``: the model scored in the event loop instead of a worker thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, Any]] = {
    "journal": {"journal": True},
    "no-journal": {"journal": False},
    "no-batching": {"max_batch_size": 1},
    "no-timeout-patch": {"patch_timeout_middleware": False},
    "in-loop": {"predict_in_thread": False},
}
MODELS = {
    "lr": ("bench-lr", "LogisticRegression", {"estimator": "sklearn.linear_model.LogisticRegression",
                                              "params": {"max_iter": 1000}, "search_space": {"C": [1.0]}}),
    "rf": ("bench-rf", "RandomForest", {"estimator": "sklearn.ensemble.RandomForestClassifier",
                                        "params": {"n_estimators": 100}, "search_space": {"max_depth": [8]}}),
}


# -- load client (runs in its own process) -----------------------------------------------------------
def load_client_main(args: argparse.Namespace) -> None:
    """Entry point of the load-generating process: prints one JSON line (the generator is tasks/http_load.py)."""
    sys.path.insert(0, str(ROOT))
    from tasks.http_load import run_http_load

    body = Path(args.body_file).read_bytes()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the load client only targets this machine (127.0.0.1)")
    print(json.dumps(run_http_load(args.host, args.port, args.path, body, args.connections, args.duration,
                                   args.warmup, args.max_requests)))


def run_load(port: int, path: str, body: bytes, connections: int, duration: float, tmp: Path) -> dict[str, Any]:
    body_file = tmp / f"body-{port}-{path.strip('/')}.json"
    body_file.write_bytes(body)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--load-client", "--host", "127.0.0.1", "--port", str(port),
           "--path", path, "--body-file", str(body_file), "--connections", str(connections), "--duration",
           str(duration), "--warmup", "1.0", "--max-requests", "500000"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- servers -------------------------------------------------------------------------------------------
def start_mlflow_serve(model_name: str, version: str, tracking_uri: str, log: Path) -> tuple[Any, int]:
    """Start ``mlflow models serve`` for a registered version; return the server (stop it) and its port."""
    from deployments.processes import start_server
    from tasks.system import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{model_name}/{version}",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    env = {"MLFLOW_TRACKING_URI": tracking_uri,  # it runs `uvicorn` from PATH
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return start_server(cmd, f"http://127.0.0.1:{port}", "/ping", log, env=env, deadline_s=180), port


def in_process_rate(model_dir: str, record: dict[str, Any], seconds: float = 3.0) -> dict[str, Any]:
    import mlflow.sklearn
    import pandas as pd

    model = mlflow.sklearn.load_model(model_dir)
    columns = list(record)
    for _ in range(20):
        model.predict(pd.DataFrame([record], columns=columns))
    calls = 0
    lat = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        model.predict(pd.DataFrame([record], columns=columns))
        lat.append(time.perf_counter() - t0)
        calls += 1
    elapsed = time.perf_counter() - started
    lat.sort()
    return {"requests": calls, "errors": 0, "rps": calls / elapsed, "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[int(0.99 * len(lat))] * 1000, "seconds": elapsed}


def measure_variants(serving: Any, version: Any, model_dir: str, label: str, body: bytes, conns: list[int],
                     variants: list[str], repeat: int, duration: float, tmp: Path) -> list[dict[str, Any]]:
    """Measure backend variants (settings overrides) interleaved ``repeat`` times; return one median row each."""
    import statistics

    from tasks._serving.common import OVERRIDES_ENV
    from tasks.bentoml_packaging import build_bento
    from tasks.bentoml_serving import start_bento_server, stop_bento_server

    bento = build_bento.fn(serving, version, model_dir)  # the deployed bento, reused
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for round_ in range(repeat):
        for variant in variants:
            os.environ[OVERRIDES_ENV] = json.dumps(VARIANTS[variant])
            try:
                backend = start_bento_server.fn(serving, bento)
            finally:
                os.environ.pop(OVERRIDES_ENV, None)
            try:
                for c in conns:
                    row = run_load(backend.port, "/predict", body, c, duration, tmp)
                    runs.setdefault((variant, c), []).append(row)
                    print(f"  {variant:<16} c={c:<3} round {round_ + 1}: {row['rps']:8.0f} rps  "
                          f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}",
                          flush=True)
            finally:
                stop_bento_server.fn(serving, backend, drain=False)
    out = []
    for (variant, c), rows in runs.items():
        out.append({"model": label, "server": f"backend[{variant}]", "connections": c,
                    "requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows),
                    "rps": statistics.median(r["rps"] for r in rows),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rows),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rows), "rounds": [r["rps"] for r in rows]})
    first = variants[0]
    for row in out:
        base = next(r for r in out if r["server"] == f"backend[{first}]" and r["connections"] == row["connections"])
        row["vs_first"] = row["rps"] / base["rps"] if base["rps"] else float("nan")
        print(f"  median {row['server']:<26} c={row['connections']:<3} {row['rps']:8.0f} rps  "
              f"p99 {row['p99_ms']:6.1f} ms  ({row['vs_first']:.2f}x {first}; rounds {row['rounds']})", flush=True)
    return out


# -- the run ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell (after 1 s warm-up)")
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--models", default="lr,rf")
    parser.add_argument("--workers", type=int, default=1, help="bentoml serve workers of our endpoint")
    parser.add_argument("--home", default=None, help="state folder (default: a new temporary one)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--variants", default="", help=f"backend variants compared in this run: {','.join(VARIANTS)}")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the variants (medians are reported)")
    parser.add_argument("--skip-mlflow", action="store_true", help="do not measure mlflow models serve")
    parser.add_argument("--load-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--path", default="/predict", help=argparse.SUPPRESS)
    parser.add_argument("--body-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--max-requests", type=int, default=500_000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_client:
        args.connections = int(args.connections)
        load_client_main(args)
        return

    home = Path(args.home or tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ["PREFECT_MLOPS_HOME"] = str(home / "state")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    from blocks.bentoml_serving import BentoMLServing
    from blocks.mlflow_server import MlflowServer
    from flows.continuous_training import continuous_training
    from flows.deploy_model import deploy_model, model_cache_dir
    from tasks.inference_log import inference_log_stats
    from tasks.mlflow_registry import alias_version, download_model_version
    from tasks.sample_data import make_customer_frame
    from tasks.serving_endpoint import stop_serving
    from tasks.sklearn_training import TrainingSpec
    from tasks.system import free_port

    conns = [int(c) for c in args.connections.split(",")]
    tmp = home / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "train.parquet"
    make_customer_frame(3000, seed=0).to_parquet(data, index=False)
    mlflow_server = MlflowServer.embedded()
    serving = BentoMLServing.embedded(port=free_port())
    serving = serving.model_copy(update={"workers": args.workers})
    serving.save("bench-serving", overwrite=True)
    print(f"state folder {home}; cpus {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}", flush=True)

    results: list[dict[str, Any]] = []
    try:
        for key in args.models.split(","):
            name, label, spec = MODELS[key]
            started = time.perf_counter()
            continuous_training(data_file=str(data), model_name=name, dataset_path=f"data/{name}.parquet",
                                training=TrainingSpec(**spec))
            version = alias_version(mlflow_server, name, "champion")
            assert version is not None
            model_dir = download_model_version.fn(mlflow_server, version, model_cache_dir(mlflow_server))
            deployed = deploy_model(model_name=name, serving_block="bench-serving")
            print(f"{label}: trained and deployed v{version.version} in {time.perf_counter() - started:.0f}s "
                  f"({deployed.bento} at {deployed.url})", flush=True)
            example = json.loads((Path(model_dir) / "input_example.json").read_text())
            record = dict(zip(example["columns"], example["data"][0], strict=True))

            inproc = in_process_rate(model_dir, record)
            results.append({"model": label, "server": "in-process", "connections": 1, **inproc})
            ours_body = json.dumps(record).encode()
            for c in conns:
                row = run_load(serving.port, "/predict", ours_body, c, args.duration, tmp)
                results.append({"model": label, "server": "ours", "connections": c, **row})
                print(f"  ours        c={c:<3} {row['rps']:8.0f} rps  p50 {row['p50_ms']:6.1f} ms  "
                      f"p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}", flush=True)
            if args.variants:
                results += measure_variants(serving, version, model_dir, label, ours_body, conns,
                                            args.variants.split(","), args.repeat, args.duration, tmp)
            if args.skip_mlflow:
                continue
            mlflow_serve, port = start_mlflow_serve(name, version.version, mlflow_server.tracking_uri,
                                            tmp / f"mlflow-serve-{name}.log")
            try:
                mlflow_body = json.dumps({"dataframe_records": [record]}).encode()
                for c in conns:
                    row = run_load(port, "/invocations", mlflow_body, c, args.duration, tmp)
                    results.append({"model": label, "server": "mlflow", "connections": c, **row})
                    print(f"  mlflow      c={c:<3} {row['rps']:8.0f} rps  p50 {row['p50_ms']:6.1f} ms  "
                          f"p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}", flush=True)
            finally:
                mlflow_serve.stop()
    finally:
        stop_serving(serving)  # the backends write what they still buffer as they stop
    names = [MODELS[key][0] for key in args.models.split(",")]
    stats = [inference_log_stats(serving.log_path(), name) for name in names]
    log = {"written": sum(s["written"] for s in stats), "dropped": sum(s["dropped"] for s in stats)}
    served = sum(r["requests"] for r in results if r["server"] == "ours" or r["server"].startswith("backend["))

    print()
    print("| model | server | conns | rps | p50 ms | p99 ms | errors | vs mlflow serve |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in results:
        base = next((r for r in results if r["model"] == row["model"] and r["server"] == "mlflow"
                     and r["connections"] == row["connections"]), None)
        ratio = f"{row['rps'] / base['rps']:.1f}x" if base and base["rps"] else "-"
        print(f"| {row['model']} | {row['server']} | {row['connections']} | {row['rps']:.0f} | {row['p50_ms']:.1f} "
              f"| {row['p99_ms']:.1f} | {row['errors']} | {ratio} |")
    print(f"\ninference log (ours): {log['written']} predictions written, {log['dropped']} dropped "
          f"({served} measured requests plus warm-up and smoke requests)")
    ours = next((r for r in results if r["model"] == "LogisticRegression" and r["server"] == "ours"
                 and r["connections"] == 8), None)
    base = next((r for r in results if r["model"] == "LogisticRegression" and r["server"] == "mlflow"
                 and r["connections"] == 8), None)
    if ours and base:
        ratio = ours["rps"] / base["rps"]
        verdict = "MET" if ratio >= 5 and ours["p99_ms"] <= 50 else "NOT MET"
        print(f"goal (LR, 8 connections): {ratio:.1f}x mlflow models serve (>= 5x), p99 {ours['p99_ms']:.1f} ms "
              f"(<= 50 ms): {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "inference_log": log}, indent=2))


if __name__ == "__main__":
    main()
