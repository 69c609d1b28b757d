"""Flow-run overhead of the Prefect server on PostgreSQL vs on SQLite (same machine, same run).

Starts PostgreSQL (``deployments/postgres.py``), a Prefect server on it and a Prefect server on
SQLite, then times trivial flow runs (one flow, one task) against each: every client runs in its
own process (its API URL, its log and event workers), the two servers alternate in rounds so that
load drift on a shared machine falls on both. Prints the median and p90 per flow run and the ratio.

    .venv/bin/python benchmarks/bench_postgres.py [--runs 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployments.postgres import start_postgres  # noqa: E402
from deployments.processes import start_prefect_server  # noqa: E402


def child(runs: int) -> None:
    """Time ``runs`` trivial flow runs against $PREFECT_API_URL (after two warm-up runs); print JSON seconds."""
    from prefect import flow, task

    @task
    def add(a: int, b: int) -> int:
        return a + b

    @flow(name="bench-trivial")
    def trivial(i: int) -> int:
        return add(i, 1)

    for i in range(2):
        trivial(i)
    times = []
    for i in range(runs):
        started = time.perf_counter()
        trivial(i)
        times.append(time.perf_counter() - started)
    print(json.dumps(times))


def measure(api: str, runs: int) -> list[float]:
    """Run :func:`child` in a new process against ``api``; return its timings."""
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    done = subprocess.run([sys.executable, __file__, "--child", "--runs", str(runs)], env=env, capture_output=True,
                          text=True, timeout=1200, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"client against {api} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Start both servers, time the flow runs, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed flow runs per server per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each server once per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.runs)
        return
    root = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    root.chmod(0o755)  # as root, PostgreSQL runs as the `postgres` user, which must reach its folder
    started = time.perf_counter()
    postgres = start_postgres(root / "postgres", databases=("prefect",))
    pg_ready = time.perf_counter() - started
    servers = []
    try:
        servers.append(start_prefect_server(root / "sqlite", ui=False, deadline_s=600))
        servers.append(start_prefect_server(root / "pg", ui=False, deadline_s=600,
                                            database_url=postgres.url("prefect", "postgresql+asyncpg")))
        times: dict[str, list[float]] = {"SQLite": [], "PostgreSQL": []}
        for _ in range(args.rounds):
            for name, server in zip(times, servers, strict=True):
                times[name] += measure(f"{server.url}/api", args.runs)
    finally:
        for server in servers:
            server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"postgres cluster ready (initdb + start): {pg_ready:.1f} s")
    print(f"{'server database':<18} {'median ms':>10} {'p90 ms':>10} {'runs':>6}")
    medians = {}
    for name, values in times.items():
        medians[name] = statistics.median(values) * 1000
        p90 = statistics.quantiles(values, n=10)[-1] * 1000
        print(f"{name:<18} {medians[name]:>10.0f} {p90:>10.0f} {len(values):>6}")
    print(f"flow-run overhead PostgreSQL / SQLite: {medians['PostgreSQL'] / medians['SQLite']:.2f}x "
          f"(trivial flow with one task, median of {args.runs * args.rounds} runs each)")


if __name__ == "__main__":
    main()
