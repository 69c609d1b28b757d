"""The data stage's own costs: contract inference, validation, CSV -> Parquet staging.

Prints the median wall time of each step on the generated churn data with its timestamp
written as a date string (what a CSV gives), so that date parsing is part of the figure.

    .venv/bin/python benchmarks/bench_data_stage.py [--rows 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blocks.data_contract import DataContract  # noqa: E402
from tasks.data_validation import check_frame  # noqa: E402
from tasks.datasets import read_dataset, stage_dataset, write_dataset  # noqa: E402
from tasks.sample_data import make_customer_frame  # noqa: E402


def _median(step, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Run the benchmark and print one line per step."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        frame = make_customer_frame(args.rows, seed=0)
        csv = Path(tmp) / "churn.csv"
        write_dataset(frame, csv)
        strings = read_dataset(csv)  # event_time as ISO strings
        contract = DataContract.infer(strings, target="churned")
        typed = DataContract.infer(frame, target="churned")
        steps = {
            "read CSV": lambda: read_dataset(csv),
            "infer contract (roles, date strings)": lambda: DataContract.infer(strings, target="churned"),
            "validate (date strings parsed)": lambda: check_frame(strings, contract),
            "validate (datetime dtype)": lambda: check_frame(frame, typed),
            "stage CSV -> Parquet": lambda: stage_dataset.fn(str(csv), "data/train.parquet", f"{tmp}/staging"),
        }
        for name, step in steps.items():
            print(f"{name:40s} {args.rows:>9,d} rows  median {_median(step, args.repeats):6.2f} s")


if __name__ == "__main__":
    main()
