"""Import cost of loading a flow vs importing prefect alone (heavy SDKs must stay lazy).

    .venv/bin/python benchmarks/bench_import.py [--repeats 7]

Goal (issue 2): ``import flows.continuous_training`` at most 1.0 s more than ``import prefect``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["prefect", "flows.continuous_training", "flows.rollback_model", "deployments.cli"]


def once(module: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    once("prefect")  # warm the page cache
    times: dict[str, list[float]] = {m: [] for m in MODULES}
    for _ in range(args.repeats):
        for module in MODULES:  # interleaved, so machine noise hits every module alike
            times[module].append(once(module))
    base = statistics.median(times["prefect"])
    print(f"{'module':<28}{'median s':>10}{'- prefect':>11}{'ratio':>8}")
    for module, values in times.items():
        med = statistics.median(values)
        print(f"{module:<28}{med:>10.2f}{med - base:>+11.2f}{med / base:>8.2f}")
    heavy = subprocess.run([sys.executable, "-c", "import sys, flows.continuous_training, deployments.cli; "
                            "print(sorted(m for m in ('mlflow', 'evidently', 'bentoml', 'dvc.repo', 'sklearn') "
                            "if m in sys.modules))"], cwd=ROOT, capture_output=True, text=True, check=True)
    print("heavy SDKs loaded by importing the flow:", heavy.stdout.strip())


if __name__ == "__main__":
    main()
