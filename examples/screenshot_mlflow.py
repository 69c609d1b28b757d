"""Screenshot what a person sees in the MLflow UI after two trainings (a weak champion, a better challenger).

    .venv/bin/python -m examples.screenshot_mlflow --out-dir /tmp/mlflow-shots

Starts a throwaway Prefect server (with its UI) and ``mlflow server`` under a temporary
``PREFECT_MLOPS_HOME``, trains ``shots-model`` twice (v1 a prior-only dummy, v2 a logistic regression
promoted over it), screenshots the registry version page, the model page, the run page, the run's
plots and alias history and the linked Prefect flow run in headless Chromium, then stops both servers.
Needs the Debian package ``chromium``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

MODEL = "shots-model"


def main() -> int:
    """Train twice, take the screenshots, print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="mlflow-shots", help="folder for the PNG files")
    parser.add_argument("--height", type=int, default=1600, help="browser window height in px")
    args = parser.parse_args()
    out = Path(args.out_dir).resolve()
    home = Path(tempfile.mkdtemp(prefix="mlflow-shots-"))
    os.environ["PREFECT_MLOPS_HOME"] = str(home / "state")  # this process only: a throwaway demo

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.processes import start_mlflow_server, start_prefect_server
    from examples import screenshot_ui

    # The MLflow pages are long: a taller window than the Prefect UI's default.
    screenshot_ui.CHROMIUM_FLAGS = tuple(f"--window-size=1400,{args.height}" if flag.startswith("--window-size")
                                         else flag for flag in screenshot_ui.CHROMIUM_FLAGS)

    prefect = start_prefect_server(home / "prefect", ui=True)
    mlflow = None
    try:
        mlflow = start_mlflow_server(home / "mlflow", deadline_s=300)
        with temporary_settings({PREFECT_API_URL: f"{prefect.url}/api"}):
            pages = _train_and_list_pages(mlflow.url, home)
        for name, url in pages.items():
            print(screenshot_ui.screenshot(url, out / f"{name}.png"), url)
    finally:
        if mlflow is not None:
            mlflow.stop()
        prefect.stop()
    return 0


def _train_and_list_pages(mlflow_url: str, home: Path) -> dict[str, str]:
    from mlflow import MlflowClient

    from blocks.mlflow_server import MlflowServer
    from blocks.promotion_policy import PromotionPolicy
    from flows.continuous_training import continuous_training
    from tasks import lineage as L
    from tasks.sample_data import make_customer_frame
    from tasks.sklearn_training import TrainingSpec

    MlflowServer(tracking_uri=mlflow_url, experiment_name="shots").save("shots-mlflow", overwrite=True)
    PromotionPolicy(min_improvement=-1.0, guard_metrics={}, floors={}, beat_baseline=False).save("shots-no-floors",
                                                                                              overwrite=True)
    days = []
    for day in (0, 1):
        path = home / f"day{day}.parquet"
        make_customer_frame(3000, seed=0, day=day).to_parquet(path, index=False)
        days.append(path)
    continuous_training(data_file=str(days[0]), model_name=MODEL, dataset_path="data/shots.parquet",
                        training=TrainingSpec(estimator="sklearn.dummy.DummyClassifier",
                                              params={"strategy": "prior"}, search_space={}),
                        mlflow_block="shots-mlflow", policy_block="shots-no-floors")
    second = continuous_training(data_file=str(days[1]), model_name=MODEL, dataset_path="data/shots.parquet",
                                 training=TrainingSpec(search_space={"C": [0.1, 1.0]}), mlflow_block="shots-mlflow")
    client = MlflowClient(tracking_uri=mlflow_url)
    run = client.get_run(second.run_id)
    base = f"{mlflow_url}/#/experiments/{run.info.experiment_id}/runs/{second.run_id}"
    return {
        "version-page": f"{mlflow_url}/#/models/{MODEL}/versions/{second.model_version}",
        "model-page": f"{mlflow_url}/#/models/{MODEL}",
        "run-page": base,
        "run-roc-curve": f"{base}/artifacts/plots/roc_curve.png",
        "run-alias-history": f"{base}/artifacts/alias_history.md",
        "prefect-flow-run": run.data.tags[L.TAG_FLOW_RUN_URL],
    }


if __name__ == "__main__":
    sys.exit(main())
