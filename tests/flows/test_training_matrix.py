"""continuous-training's rails on real runs: the gate fails closed, refused policies, dates as features.

Real Prefect server, real mlflow server, real git + DVC; scikit-learn's iris and breast cancer.
Defaults-only training on every bundled dataset (each task type, string labels, missing values,
dates) is the whole-loop matrix in ``tests/test_dataset_matrix.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from blocks.data_contract import DataContract
from blocks.mlflow_server import MlflowServer
from blocks.promotion_policy import PromotionPolicy
from flows.common import model_cache_dir
from flows.continuous_training import continuous_training
from tasks.exceptions import RegistryError, TrainingConfigError


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from sklearn.datasets import load_breast_cancer, load_iris

    folder = tmp_path_factory.mktemp("matrix")
    iris = load_iris(as_frame=True)
    frames = {"iris": iris.frame.assign(target=iris.target_names[iris.target]),
              "cancer": load_breast_cancer(as_frame=True).frame}
    paths = {}
    for name, frame in frames.items():
        paths[name] = str(folder / f"{name}.parquet")
        frame.to_parquet(paths[name], index=False)
    return paths


def test_policy_naming_a_metric_the_task_cannot_produce_stops_before_any_trial(
        datasets: dict[str, str], mlflow_block_name: str, client: MlflowClient) -> None:
    PromotionPolicy(floors={"roc_auc": 0.6}).save("binary-floors", overwrite=True)
    with pytest.raises(TrainingConfigError, match=r"PromotionPolicy.floors names 'roc_auc'.*f1_macro"):
        continuous_training(data_file=datasets["iris"], model_name="mx-refused", target="target",
                            dataset_path="data/mx-refused.parquet", mlflow_block=mlflow_block_name,
                            policy_block="binary-floors")
    assert client.search_model_versions("name = 'mx-refused'") == []
    experiment = client.get_experiment_by_name("tests")
    assert client.search_runs([experiment.experiment_id],
                              "tags.`mlops.data.path` = 'data/mx-refused.parquet'") == []


def test_unscorable_champion_is_rejected_by_default_and_allowed_by_the_policy_switch(
        datasets: dict[str, str], mlflow_block_name: str, client: MlflowClient, tmp_path: Path) -> None:
    """Issue 7: a champion that could not be scored was an empty record, and the challenger was promoted."""
    first = continuous_training(data_file=datasets["cancer"], model_name="mx-unscorable", target="target",
                                dataset_path="data/mx-unscorable.parquet", mlflow_block=mlflow_block_name)
    assert first.promoted
    frame = pd.read_parquet(datasets["cancer"])
    relabelled = frame.assign(target=np.where(frame["target"] == 1, "benign", "malignant"))
    path = tmp_path / "relabelled.parquet"
    relabelled.to_parquet(path, index=False)
    DataContract.infer(relabelled, target="target").save("mx-relabelled", overwrite=True)
    second = continuous_training(data_file=str(path), model_name="mx-unscorable", target="target",
                                 dataset_path="data/mx-unscorable.parquet", mlflow_block=mlflow_block_name,
                                 contract_block="mx-relabelled")
    assert not second.promoted and second.verdict == "rejected"
    assert any(f"champion v{first.model_version} could not be scored" in r and "labels" in r for r in second.reasons)
    assert client.get_model_version_by_alias("mx-unscorable", "champion").version == first.model_version
    tags = client.get_model_version("mx-unscorable", second.model_version).tags
    assert tags["mlops.gate.champion_version"] == "none"  # nothing was compared with the champion
    compared = json.loads(tags["mlops.gate.compared"])
    assert compared["champion_present"] == first.model_version and compared["champion_scored"] is False
    assert compared["test_rows"] > 0 and compared["test_digest"]
    PromotionPolicy(allow_unscorable_champion=True).save("allow-unscorable", overwrite=True)
    third = continuous_training(data_file=str(path), model_name="mx-unscorable", target="target",
                                dataset_path="data/mx-unscorable.parquet", mlflow_block=mlflow_block_name,
                                contract_block="mx-relabelled", policy_block="allow-unscorable")
    assert third.promoted
    assert any("allowed by policy allow_unscorable_champion" in r for r in third.reasons)
    assert client.get_model_version_by_alias("mx-unscorable", "champion").version == third.model_version


def test_a_champion_download_failure_fails_the_run_and_promotes_nothing(
        datasets: dict[str, str], mlflow_block_name: str, mlflow_server, session_home: Path,
        client: MlflowClient, tmp_path: Path) -> None:
    """Issue 8 item 1: a download error was taken for "cannot score" and a worse challenger was promoted."""
    first = continuous_training(data_file=datasets["cancer"], model_name="mx-infra", target="target",
                                dataset_path="data/mx-infra.parquet", mlflow_block=mlflow_block_name)
    assert first.promoted
    # The artifact store loses the champion's files (a real storage fault on the server's side).
    # The model's files live under its LoggedModel (models:/<model_id>), the rest under the run.
    model_id = client.get_model_version("mx-infra", first.model_version).source.removeprefix("models:/")
    artifacts = session_home / "mlflow-server" / "artifacts"
    run_dirs = [p for name in (first.run_id, model_id) for p in artifacts.rglob(name) if p.is_dir()]
    assert any(model_id in str(p) for p in run_dirs), run_dirs
    for folder in run_dirs:
        shutil.rmtree(folder)
    shutil.rmtree(Path(model_cache_dir(MlflowServer.load(mlflow_block_name))) / "mx-infra-v1", ignore_errors=True)
    frame = pd.read_parquet(datasets["cancer"]).iloc[10:]
    path = tmp_path / "cancer-later.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(RegistryError, match=r"'mx-infra' version 1"):
        continuous_training(data_file=str(path), model_name="mx-infra", target="target",
                            dataset_path="data/mx-infra.parquet", mlflow_block=mlflow_block_name)
    # The new version was registered before the gate: it stays "pending" with no alias (the next run gates it).
    for version in client.search_model_versions("name = 'mx-infra'"):
        if version.version != first.model_version:
            assert version.tags["mlops.promotion.state"] == "pending" and not version.aliases
    assert client.get_model_version_by_alias("mx-infra", "champion").version == first.model_version
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id], "tags.`mlops.data.path` = 'data/mx-infra.parquet'",
                              order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "FAILED" and runs[0].info.run_id != first.run_id


def test_dates_as_strings_are_date_features_and_the_registered_model_serves_them(
        mlflow_block_name: str, mlflow_server, client: MlflowClient, tmp_path: Path) -> None:
    """Issue 7: a date column and an ID column were one-hot encoded; now: expanded dates, ID excluded."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(5)
    n = 600
    frame = pd.DataFrame({"order_id": [f"O-{i:07d}" for i in range(n)],
                          "ordered": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
                          "amount": rng.gamma(2.0, 30.0, n), "channel": rng.choice(["web", "shop", "phone"], n)})
    weekend = pd.to_datetime(frame["ordered"]).dt.weekday >= 5
    frame["returned"] = np.where(weekend ^ (rng.random(n) < 0.1), "yes", "no")
    path = tmp_path / "orders.parquet"
    frame.to_parquet(path, index=False)
    summary = continuous_training(data_file=str(path), model_name="mx-dates", target="returned",
                                  dataset_path="data/mx-dates.parquet", mlflow_block=mlflow_block_name)
    assert summary.promoted and summary.task_type == "binary" and summary.metrics["roc_auc"] > 0.8
    tags = client.get_model_version("mx-dates", summary.model_version).tags
    assert json.loads(tags["mlops.features"]) == ["ordered", "amount", "channel"]
    roles = json.loads(tags["mlops.column_roles"])
    assert roles["order_id"] == "identifier" and roles["ordered"] == "datetime"
    assert json.loads(tags["mlops.positive_label"]) == "yes" and json.loads(tags["mlops.classes"]) == ["no", "yes"]
    requests = pd.DataFrame({"ordered": ["2024-06-01", "2024-06-03", "2025-01-04T10:00:00"],
                             "amount": [50.0, 50.0, 20.0], "channel": ["web", "fax", "shop"]})
    script = ("import json, pandas as pd, mlflow.pyfunc, sys\n"
              "m = mlflow.pyfunc.load_model('models:/mx-dates@champion')\n"
              f"x = pd.read_json({requests.to_json(orient='records')!r}, orient='records', dtype=False)\n"
              "print(json.dumps([str(v) for v in m.predict(x)]))\n"
              "print('tasks' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_MLOPS")}
    env["MLFLOW_TRACKING_URI"] = mlflow_server.url
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    import mlflow.pyfunc

    mlflow.set_tracking_uri(mlflow_server.url)  # the test, not the library, sets global state
    in_process = [str(v) for v in mlflow.pyfunc.load_model("models:/mx-dates@champion").predict(requests)]
    assert json.loads(lines[-2]) == in_process and set(in_process) <= {"yes", "no"}
    assert lines[-1] == "False"  # the serving process never imported our code


def test_time_split_retrain_whose_validation_slice_holds_two_of_three_classes(
        mlflow_block_name: str, client: MlflowClient, tmp_path: Path) -> None:
    """Issue 7: binary averaging was chosen from a two-class validation slice of string labels: a crash."""
    from tasks.sklearn_training import TrainingSpec

    rng = np.random.default_rng(3)
    n = 900
    x = rng.normal(size=n)
    label = np.where(x < -0.5, "low", np.where(x < 0.5, "mid", "high"))
    label[-360:] = np.where(x[-360:] < 0, "low", "mid")  # validation and test: two of the three classes
    frame = pd.DataFrame({"x": x, "y2": rng.normal(size=n), "label": label,
                          "when": pd.date_range("2025-01-01", periods=n, freq="h").strftime("%Y-%m-%dT%H:%M:%S")})
    path = tmp_path / "seasonal.parquet"
    frame.to_parquet(path, index=False)
    summary = continuous_training(data_file=str(path), model_name="mx-time", target="label",
                                  dataset_path="data/mx-time.parquet", mlflow_block=mlflow_block_name,
                                  training=TrainingSpec(split="time", time_column="when"))
    assert summary.task_type == "multiclass" and "f1_macro" in summary.metrics and summary.reasons
    tags = client.get_model_version("mx-time", summary.model_version).tags
    assert json.loads(tags["mlops.classes"]) == ["high", "low", "mid"] and tags["mlops.time_column"] == "when"
    assert "when" not in json.loads(tags["mlops.features"])
