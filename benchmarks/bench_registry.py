"""Cost of the registry rails against a real ``mlflow server``: the per-model lock, a locked alias move, scoping.

Prints medians (ms) over ``--repeats`` of: lock acquire + release; an alias move with its
history record under a held lock; the same move taking and releasing the lock itself
(``set_model_alias``); one request through a scoped client vs a plain ``MlflowClient``.

    .venv/bin/python benchmarks/bench_registry.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blocks.mlflow_server import MlflowServer  # noqa: E402
from deployments.processes import start_mlflow_server  # noqa: E402
from tasks.mlflow_alias_history import move_alias, set_model_alias  # noqa: E402
from tasks.mlflow_locks import acquire, release  # noqa: E402


def median_ms(step: Callable[[int], object], repeats: int) -> float:
    """Median wall time of ``step(i)`` in milliseconds."""
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        step(i)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    """Run the measurements and print one line per figure."""
    from mlflow import MlflowClient

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    server_process = start_mlflow_server(Path(tempfile.mkdtemp(prefix="bench-registry-")), deadline_s=600)
    try:
        server = MlflowServer(tracking_uri=server_process.url)
        plain = MlflowClient(tracking_uri=server_process.url)
        experiment_id = plain.create_experiment("bench-registry")
        run = plain.create_run(experiment_id)
        plain.create_registered_model("bench")
        for _ in range(2):
            plain.create_model_version("bench", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)

        def lock_cycle(_: int) -> None:
            release(server, acquire(server, "bench"))

        lock_cycle(0)  # warm-up
        figures = {"lock acquire + release": median_ms(lock_cycle, args.repeats)}
        held = acquire(server, "bench")
        figures["alias move + record (lock held)"] = median_ms(
            lambda i: move_alias(server, "bench", "champion", str(i % 2 + 1), "bench"), args.repeats)
        release(server, held)
        figures["set_model_alias (takes the lock)"] = median_ms(
            lambda i: set_model_alias.fn(server, "bench", "champion", str(i % 2 + 1), "bench"), args.repeats)
        scoped = server.get_client()
        figures["one request, scoped client"] = median_ms(lambda _: scoped.get_experiment(experiment_id),
                                                          args.repeats)
        figures["one request, plain MlflowClient"] = median_ms(lambda _: plain.get_experiment(experiment_id),
                                                               args.repeats)
        for name, value in figures.items():
            print(f"{name:<36} {value:8.1f} ms (median of {args.repeats})")
    finally:
        server_process.stop()


if __name__ == "__main__":
    main()
