"""Performance verdict per task type, and event-time window selection, on large labelled windows.

Run from the repository root::

    .venv/bin/python benchmarks/bench_monitoring_performance.py            # 100k and 1M rows
    .venv/bin/python benchmarks/bench_monitoring_performance.py --quick    # 100k rows

Data (seeded): binary labels "no"/"yes" with a score; three string classes with JSON per-class
probabilities (the inference log's ``probabilities`` column); a regression target; ISO date strings
over 30 years for the event-time selection of one quarter. Each figure is the median of 3 runs of
the computation alone (imports and data generation excluded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def median_seconds(call: Any, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(n: int) -> list[float]:
    """Median seconds of the four computations on ``n`` rows."""
    import numpy as np
    import pandas as pd

    from blocks.monitoring_policy import MonitoringPolicy
    from tasks.monitoring_data import select_event_window
    from tasks.monitoring_performance import compute_performance

    rng = np.random.default_rng(0)
    score = rng.random(n)
    binary = pd.DataFrame({"label": np.where(rng.random(n) < score, "yes", "no"),
                           "prediction": np.where(score > 0.5, "yes", "no"), "score": score})
    classes = ["setosa", "versicolor", "virginica"]
    p = rng.dirichlet([1, 1, 1], n)
    multi = pd.DataFrame({"label": np.array(classes)[rng.integers(0, 3, n)],
                          "prediction": np.array(classes)[p.argmax(1)],
                          "probabilities": [json.dumps(dict(zip(classes, r.round(4).tolist(), strict=True)))
                                            for r in p]})
    y = rng.normal(150, 50, n)
    regression = pd.DataFrame({"label": y, "prediction": y + rng.normal(0, 20, n)})
    days = pd.Timestamp("1990-01-01") + pd.to_timedelta(rng.integers(0, 365 * 30, n), unit="D")
    events = pd.DataFrame({"date": days.strftime("%Y-%m-%d")})
    policy = MonitoringPolicy()
    by_auc = policy.model_copy(update={"primary_metric": "roc_auc_ovr"})
    return [
        median_seconds(lambda: compute_performance(binary, "label", "prediction", "score", {"roc_auc": 0.8},
                                                   policy, classes=["no", "yes"])),
        median_seconds(lambda: compute_performance(multi, "label", "prediction", None, {"roc_auc_ovr": 0.5}, by_auc,
                                                   task_type="multiclass", classes=classes,
                                                   probabilities_column="probabilities")),
        median_seconds(lambda: compute_performance(regression, "label", "prediction", None, {"rmse": 20.0},
                                                   policy, task_type="regression")),
        median_seconds(lambda: select_event_window(events, "date", "2000-01-01", "2000-04-01")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows only")
    sizes = (100_000,) if parser.parse_args().quick else (100_000, 1_000_000)
    print("| rows | binary roc_auc s | multiclass roc_auc_ovr s | regression rmse s | event-time selection s |")
    print("|---|---|---|---|---|")
    for n in sizes:
        print(f"| {n:,} | " + " | ".join(f"{v:.2f}" for v in measure(n)) + " |")


if __name__ == "__main__":
    main()
