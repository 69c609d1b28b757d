"""Sustained load on the stable endpoint: errors, memory growth, a swap and monitoring reads mid-traffic.

Run from the repository root::

    .venv/bin/python benchmarks/bench_load.py                       # 60 s at 32 connections (about 3 min)
    .venv/bin/python benchmarks/bench_load.py --seconds 15 --connections 8   # a short look

What it does, in one process tree on this machine: trains two logistic-regression versions of a
model (embedded MLflow on SQLite), deploys v1 behind the stable URL with inference logging on,
then sends ``--seconds`` of continuous traffic at ``--connections`` keep-alive connections from a
separate load process (``bench_serving.py``'s client). Meanwhile it

* samples the resident memory (RSS) of every process of the endpoint (front, backends and their
  workers, found with psutil from the endpoint's state) once a second;
* at half time deploys v2 (``deploy_model(version="2")``): a swap under traffic;
* every 5 s reads the inference log's current window (``read_inference_log``), as monitoring does.

It prints: requests, errors, rps, p50/p99; memory after warm-up (median of the 10 s after the
first 10 s) and at the end (median of the last 10 s) and their growth; the swap's duration;
the log reads (rows, seconds); and the inference log's written/dropped counts after the endpoint
stops. The baseline of the same run is the first 10 s after warm-up (memory) and the load
client's own numbers before the swap (rps before / after). Exit 1 when a request failed, a read
failed or memory grew more than 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def endpoint_rss(serving: Any) -> float:
    """Resident memory (MiB) of every live process of the endpoint: front, backends, their workers."""
    from tasks.serving_endpoint import serving_status
    from tasks.system import tree_rss_mb

    status = serving_status(serving, probe=False)
    pids = [status.get("front", {}).get("pid"), (status.get("backend") or {}).get("pid"),
            *((status.get("backend") or {}).get("workers") or [])]
    return tree_rss_mb(pids) or 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--home", default=None, help="state folder (default: a new temporary one)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    home = Path(args.home or tempfile.mkdtemp(prefix="bench-load-"))
    os.environ["PREFECT_MLOPS_HOME"] = str(home / "state")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network: no telemetry errors
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from bench_serving import MODELS

    from blocks.bentoml_serving import BentoMLServing
    from blocks.mlflow_server import MlflowServer
    from flows.continuous_training import continuous_training
    from flows.deploy_model import deploy_model, model_cache_dir
    from tasks.bentoml_packaging import resolve_model_version
    from tasks.inference_log import inference_log_stats, read_inference_log
    from tasks.mlflow_registry import download_model_version
    from tasks.sample_data import make_customer_frame
    from tasks.serving_endpoint import stop_serving
    from tasks.sklearn_training import TrainingSpec
    from tasks.system import free_port

    name, _, spec = MODELS["lr"]
    tmp = home / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    for seed, c in ((0, 1.0), (1, 0.5)):  # two versions (the gate's verdict does not matter: v2 is deployed by number)
        data = tmp / f"train-{seed}.parquet"
        make_customer_frame(3000, seed=seed).to_parquet(data, index=False)
        continuous_training(data_file=str(data), model_name=name, dataset_path=f"data/{name}.parquet",
                            training=TrainingSpec(**{**spec, "search_space": {"C": [c]}}))
    mlflow_server = MlflowServer.embedded()
    serving = BentoMLServing.embedded(port=free_port())
    serving.save("bench-load", overwrite=True)
    print(f"state folder {home}; cpus {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}", flush=True)

    figures: dict[str, Any] = {"seconds": args.seconds, "connections": args.connections}
    try:
        deploy_model(model_name=name, alias=None, version="1", serving_block="bench-load")
        version = resolve_model_version.fn(mlflow_server, name, None, "1")
        model_dir = download_model_version.fn(mlflow_server, version, model_cache_dir(mlflow_server))
        example = json.loads((Path(model_dir) / "input_example.json").read_text())
        record = dict(zip(example["columns"], example["data"][0], strict=True))
        body_file = tmp / "body.json"
        body_file.write_text(json.dumps(record))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_serving.py"), "--load-client", "--host", "127.0.0.1",
               "--port", str(serving.port), "--path", "/predict", "--body-file", str(body_file), "--connections",
               str(args.connections), "--duration", str(args.seconds), "--warmup", "1.0",
               "--max-requests", "100000000"]
        samples: list[tuple[float, float]] = []
        reads: list[dict[str, Any]] = []
        stop = threading.Event()

        def sample_memory(started: float) -> None:
            while not stop.is_set():
                try:
                    samples.append((time.perf_counter() - started, endpoint_rss(serving)))
                except Exception as exc:  # noqa: BLE001 - a missed sample is reported, not fatal
                    print(f"memory sample failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                stop.wait(1.0)

        def read_windows(started: float) -> None:
            while not stop.wait(5.0):
                t0 = time.perf_counter()
                try:
                    rows = len(read_inference_log(serving.log_path(), name))
                    reads.append({"at_s": round(t0 - started, 1), "rows": rows,
                                  "seconds": round(time.perf_counter() - t0, 2)})
                except Exception as exc:  # noqa: BLE001 - reported and failing the run
                    reads.append({"at_s": round(t0 - started, 1), "error": f"{type(exc).__name__}: {exc}"})

        client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = time.perf_counter()
        threads = [threading.Thread(target=f, args=(started,), daemon=True) for f in (sample_memory, read_windows)]
        for thread in threads:
            thread.start()
        time.sleep(1.0 + args.seconds / 2)  # the swap at half time (the client's clock starts after 1 s of warm-up)
        swap_started = time.perf_counter()
        swapped = deploy_model(model_name=name, alias=None, version="2", serving_block="bench-load")
        figures["swap_s"] = round(time.perf_counter() - swap_started, 1)
        figures["swapped_to"] = swapped.model_version
        out, err = client.communicate(timeout=args.seconds + 300)
        stop.set()
        for thread in threads:
            thread.join(30)
        if client.returncode != 0:
            raise RuntimeError(f"load client failed: {err[-2000:]}")
        figures.update(json.loads(out.strip().splitlines()[-1]))
    finally:
        stop_serving(serving)
    stats = inference_log_stats(serving.log_path(), name)
    figures["log_written"], figures["log_dropped"] = stats["written"], stats["dropped"]

    warm = [m for t, m in samples if 10.0 <= t < 20.0] or [m for _, m in samples[:5]]
    end = [m for t, m in samples if t >= samples[-1][0] - 10.0]
    figures["rss_after_warmup_mib"] = round(statistics.median(warm), 1)
    figures["rss_end_mib"] = round(statistics.median(end), 1)
    figures["rss_growth"] = round(figures["rss_end_mib"] / figures["rss_after_warmup_mib"] - 1.0, 3)
    figures["rss_max_mib"] = round(max(m for _, m in samples), 1)
    figures["reads"] = reads
    failed_reads = [r for r in reads if "error" in r]

    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| traffic | {args.seconds:.0f} s at {args.connections} connections, inference logging on |")
    print(f"| requests / errors | {figures['requests']:,} / {figures['errors']} |")
    print(f"| rps, p50 / p99 ms | {figures['rps']:.0f}, {figures['p50_ms']:.1f} / {figures['p99_ms']:.1f} |")
    print(f"| swap to v{figures['swapped_to']} mid-traffic | {figures['swap_s']} s |")
    print(f"| endpoint RSS after warm-up (10-20 s) -> last 10 s | {figures['rss_after_warmup_mib']} -> "
          f"{figures['rss_end_mib']} MiB ({figures['rss_growth']:+.1%}); max {figures['rss_max_mib']} MiB; "
          f"{len(samples)} samples |")
    print(f"| monitoring reads during traffic | {len(reads) - len(failed_reads)} ok, {len(failed_reads)} failed; "
          f"rows {[r.get('rows') for r in reads]} |")
    print(f"| inference log written / dropped | {figures['log_written']:,} / {figures['log_dropped']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    ok = figures["errors"] == 0 and not failed_reads and figures["rss_growth"] <= 0.10 and figures["log_dropped"] == 0
    print("\nverdict:", "PASS" if ok else "FAIL", "(0 errors, 0 failed reads, RSS growth <= 10%, 0 dropped)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
