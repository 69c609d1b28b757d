"""`make demo`: the training half of the loop on embedded defaults, nothing to configure.

Day 0: a sample batch is versioned with DVC, validated, tuned (parallel trials), tracked
in MLflow, registered and promoted to ``champion``. Day 1: a new batch with some drift is
versioned and trained on; the gate compares the challenger with the champion on the same
test data and promotes it or records why not.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> int:
    """Run the demo and print a readable timeline."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from blocks.settings import state_dir
    from flows.continuous_training import continuous_training
    from tasks.sample_data import make_customer_frame
    from tasks.sklearn_training import TrainingSpec

    home = state_dir()
    incoming = home / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    spec = TrainingSpec(search_space={"C": [0.03, 0.3, 3.0]})
    started = time.perf_counter()
    print(f"prefect-mlops demo: state in {home}\n")
    for day, drift in ((0, 0.0), (1, 0.3)):
        path = incoming / f"day{day}.parquet"
        make_customer_frame(8000, seed=42, day=day, covariate_drift=drift).to_parquet(path, index=False)
        print(f"== day {day}: new batch {path.name} (covariate drift {drift}) ==")
        summary = continuous_training(data_file=str(path), training=spec)
        print(summary.render(), "\n")
    db = home / "mlflow" / "mlflow.db"
    print(f"Done in {time.perf_counter() - started:.0f}s.")
    print(f"Browse runs and the registry:  .venv/bin/mlflow ui --backend-store-uri sqlite:///{db}")
    print(f"Data repository (git + DVC):   git -C {Path(home / 'dvc' / 'data-repo')} log --oneline")
    print("Start over:                    rm -rf .mlops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
