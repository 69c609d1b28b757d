"""Models are MLflow 3 LoggedModels: metrics and dataset linked, the registry version points at them.

Against the session's real ``mlflow server`` (proxied artifacts) through the real continuous-training
flow, and against an embedded SQLite store through the same tasks.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import joblib
import pandas as pd
import pytest
from mlflow import MlflowClient

from blocks.mlflow_server import MlflowServer
from flows.continuous_training import continuous_training
from tasks.mlflow_models import TAG_MODEL_ID, TAG_MODEL_KEY, log_sklearn_model, logged_model_id
from tasks.mlflow_registry import download_model_version, get_alias_version, register_model_version, version_info
from tasks.mlflow_tracking import log_dataset_input, log_evaluation
from tasks.model_evaluation import evaluate_model, load_model
from tasks.sklearn_training import TrainingSpec

MODEL = "lm-main"
SMALL = TrainingSpec(search_space={"C": [0.1, 1.0]})
TARGET = "churned"


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url)


@pytest.fixture(scope="module")
def trained(mlflow_block_name: str, sample_dir: Path):
    """One model trained and promoted through the real flow."""
    return continuous_training(data_file=str(sample_dir / "day0.parquet"), model_name=MODEL,
                               dataset_path="data/lm-main.parquet", training=SMALL, mlflow_block=mlflow_block_name)


def models_of_run(client: MlflowClient, run_id: str) -> list:
    experiment_id = client.get_run(run_id).info.experiment_id
    return [m for m in client.search_logged_models([experiment_id], max_results=1000) if m.source_run_id == run_id]


def features_of(version_tags: dict[str, str]) -> list[str]:
    return json.loads(version_tags["mlops.features"])


def test_training_logs_one_ready_logged_model_with_test_metrics_and_dataset(trained, client: MlflowClient) -> None:
    models = models_of_run(client, trained.run_id)
    assert len(models) == 1, [m.model_id for m in models]
    model = models[0]
    assert str(model.status) == "READY" and model.name == "model" and model.model_type == "sklearn"
    assert float(model.params["C"]) in (0.1, 1.0)
    run = client.get_run(trained.run_id)
    dataset = run.inputs.dataset_inputs[0].dataset
    linked = {m.key: m for m in model.metrics}
    for name, value in trained.metrics.items():
        metric = linked[f"test_{name}"]
        assert metric.value == pytest.approx(value) and metric.run_id == trained.run_id
        assert (metric.dataset_name, metric.dataset_digest) == (dataset.name, dataset.digest)
    assert model.model_id in {o.model_id for o in run.outputs.model_outputs}
    # The run keeps its metrics too (one point each).
    assert len(client.get_metric_history(trained.run_id, "test_roc_auc")) == 1


def test_the_registered_version_points_at_the_logged_model(trained, client: MlflowClient) -> None:
    (model,) = models_of_run(client, trained.run_id)
    version = client.get_model_version(MODEL, trained.model_version)
    assert version.source == f"models:/{model.model_id}" and version.run_id == trained.run_id
    assert version.tags[TAG_MODEL_ID] == model.model_id
    assert version_info(version).model_id == model.model_id
    assert client.get_model_version_download_uri(MODEL, trained.model_version) == model.artifact_location
    listed = json.loads(model.tags["mlflow.modelVersions"])
    assert [(e["name"], str(e["version"])) for e in listed] == [(MODEL, trained.model_version)]


def test_champion_loads_with_pyfunc(trained, mlflow_server, sample_dir: Path, client: MlflowClient) -> None:
    import mlflow
    import mlflow.pyfunc

    mlflow.set_tracking_uri(mlflow_server.url)  # the test, not the library, sets global state
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    features = features_of(client.get_model_version(MODEL, trained.model_version).tags)
    frame = pd.read_parquet(sample_dir / "day1.parquet")[features].head(20)
    predictions = model.predict(frame)
    assert len(predictions) == 20 and set(pd.Series(predictions).unique()) <= {0, 1}
    assert json.loads(model.metadata.metadata["features"]) == features


def test_our_download_reads_the_logged_model_through_the_proxy(trained, mlflow_block_name: str, tmp_path: Path,
                                                               sample_dir: Path) -> None:
    server = MlflowServer.load(mlflow_block_name)
    champion = get_alias_version.fn(server, MODEL)
    assert champion is not None and logged_model_id(champion.source) == champion.model_id
    folder = Path(download_model_version.fn(server, champion, str(tmp_path)))
    mlmodel = (folder / "MLmodel").read_text()
    assert "signature:" in mlmodel and "features:" in mlmodel and "skops" in mlmodel
    requirements = (folder / "requirements.txt").read_text().split()
    assert any(r.startswith("scikit-learn==") for r in requirements) and any(r.startswith("mlflow==") for r in
                                                                               requirements)
    assert (folder / "input_example.json").is_file()
    frame = pd.read_parquet(sample_dir / "day1.parquet")[features_of(champion.tags)].head(5)
    assert len(load_model(str(folder)).predict(frame)) == 5


def fit_small_model(sample_dir: Path, folder: Path) -> tuple[str, str, list[str]]:
    """A fitted pipeline file and the test file it is logged with (what a training trial leaves)."""
    from sklearn.linear_model import LogisticRegression

    frame = pd.read_parquet(sample_dir / "day0.parquet")
    features = ["tenure_months", "monthly_charges"]
    model = LogisticRegression(max_iter=200).fit(frame[features], frame[TARGET])
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    frame.head(300).to_parquet(folder / "test.parquet", index=False)
    return str(folder / "model.joblib"), str(folder / "test.parquet"), features


def log_and_register(server: MlflowServer, client: MlflowClient, sample_dir: Path, folder: Path,
                     name: str) -> tuple[str, str, str, list[str], str]:
    """Run, dataset, LoggedModel, linked evaluation, version: what the training stages do."""
    experiment = client.get_experiment_by_name(server.experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        server.experiment_name, artifact_location=server.artifact_location)
    run_id = client.create_run(experiment_id, run_name=f"lm-{uuid.uuid4().hex[:6]}").info.run_id
    model_path, test_file, features = fit_small_model(sample_dir, folder)
    digest = log_dataset_input.fn(server, run_id, test_file, "repo/test.parquet@abc", "test", TARGET)
    uri = log_sklearn_model.fn(server, run_id, model_path, test_file, features, params={"max_iter": 200})
    evaluation = evaluate_model.fn(model_path, test_file, TARGET, "binary", features)
    log_evaluation.fn(server, run_id, evaluation, model_id=uri, dataset_name="test", dataset_digest=digest)
    version = register_model_version.fn(server, name, uri, run_id, {"mlops.features": json.dumps(features)})
    return run_id, uri, version.version, features, test_file


def test_a_retried_log_and_register_create_no_second_model_or_version(mlflow_server, sample_dir: Path,
                                                                      tmp_path: Path) -> None:
    server = MlflowServer(tracking_uri=mlflow_server.url, experiment_name="tests-logged-model")
    client = MlflowClient(tracking_uri=mlflow_server.url)
    name = f"lm-retry-{uuid.uuid4().hex[:6]}"
    run_id, uri, version, features, test_file = log_and_register(server, client, sample_dir, tmp_path, name)
    model_path = str(tmp_path / "model.joblib")
    assert log_sklearn_model.fn(server, run_id, model_path, test_file, features) == uri  # a retry
    again = register_model_version.fn(server, name, uri, run_id, {})
    assert again.version == version and [v.version for v in client.search_model_versions(f"name = '{name}'")] == [
        version]
    (model,) = models_of_run(client, run_id)
    assert f"models:/{model.model_id}" == uri and str(model.status) == "READY"
    assert len(json.loads(model.tags["mlflow.modelVersions"])) == 1


def test_a_retry_after_a_half_logged_model_completes_that_model(mlflow_server, sample_dir: Path,
                                                                tmp_path: Path) -> None:
    """The first attempt created the LoggedModel and died before uploading: the retry finishes that one."""
    server = MlflowServer(tracking_uri=mlflow_server.url, experiment_name="tests-logged-model")
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name(server.experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(server.experiment_name)
    run_id = client.create_run(experiment_id).info.run_id
    half = client.create_logged_model(experiment_id, name="model", source_run_id=run_id,
                                      tags={TAG_MODEL_KEY: f"{run_id}/model"})
    assert str(half.status) == "PENDING"
    model_path, test_file, features = fit_small_model(sample_dir, tmp_path)
    uri = log_sklearn_model.fn(server, run_id, model_path, test_file, features)
    assert uri == f"models:/{half.model_id}"
    (model,) = models_of_run(client, run_id)
    assert str(model.status) == "READY"
    assert "MLmodel" in {a.path for a in client.list_logged_model_artifacts(half.model_id)}


def test_embedded_sqlite_store_logs_registers_and_downloads(sample_dir: Path, tmp_path: Path) -> None:
    """No server: the version's source is the LoggedModel's files, linked by tag both ways; old sources still work."""
    server = MlflowServer.embedded(root=tmp_path / "store", experiment_name="embedded")
    client = server.get_client()
    name = "lm-embedded"
    run_id, uri, version, features, test_file = log_and_register(server, client, sample_dir, tmp_path / "fit", name)
    model = client.get_logged_model(logged_model_id(uri))
    assert str(model.status) == "READY" and {m.key for m in model.metrics} >= {"test_roc_auc", "test_accuracy"}
    info = version_info(client.get_model_version(name, version))
    assert info.model_id == model.model_id and info.source == model.artifact_location
    assert [(e["name"], str(e["version"])) for e in json.loads(model.tags["mlflow.modelVersions"])] == [
        (name, version)]
    folder = download_model_version.fn(server, info, str(tmp_path / "cache"))
    frame = pd.read_parquet(test_file)[features].head(5)
    assert len(load_model(folder).predict(frame)) == 5
    # A version registered the old way (plain run artifacts) still downloads.
    client.log_artifacts(run_id, folder, "model")
    old_source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/model"
    old = register_model_version.fn(server, name, old_source, run_id, {})
    assert old.model_id is None and old.version != version
    old_folder = download_model_version.fn(server, old, str(tmp_path / "cache"))
    assert len(load_model(old_folder).predict(frame)) == 5
