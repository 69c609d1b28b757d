"""The continuous-training and rollback flows end to end: real Prefect, real mlflow server, real git + DVC.

Also continuous-training's rails on real runs (scikit-learn's iris and breast cancer): the gate fails closed,
refused policies, dates as features. Defaults-only training on every bundled dataset (each task type, string
labels, missing values, dates) is the whole-loop matrix in ``tests/test_dataset_matrix.py``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from servers import wait_until

from blocks.data_contract import DataContract
from blocks.dvc_repository import DvcRepository
from blocks.mlflow_server import MlflowServer
from blocks.promotion_policy import PromotionPolicy
from flows.common import model_cache_dir
from flows.continuous_training import continuous_training
from flows.rollback_model import rollback_model
from tasks.exceptions import DataValidationError, RegistryError, TrackingServerError, TrainingConfigError
from tasks.mlflow_alias_history import alias_history, version_at
from tasks.sklearn_training import TrainingSpec

SMALL = TrainingSpec(search_space={"C": [0.1, 1.0]})
WEAK = TrainingSpec(estimator="sklearn.dummy.DummyClassifier", params={"strategy": "prior"}, search_space={})


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url)


@pytest.fixture(scope="module")
def lenient_policy(prefect_server: str) -> str:
    PromotionPolicy(min_improvement=-1.0, guard_metrics={}, floors={}).save("lenient", overwrite=True)
    return "lenient"


@pytest.fixture(scope="module")
def trained(mlflow_block_name: str, sample_dir: Path):
    """One model trained and promoted on day 0; shared by the read-only tests below."""
    return continuous_training(data_file=str(sample_dir / "day0.parquet"), model_name="ct-main",
                               dataset_path="data/ct-main.parquet", training=SMALL, mlflow_block=mlflow_block_name)


def test_first_run_versions_trains_registers_and_promotes(trained, client: MlflowClient) -> None:
    assert trained.promoted and trained.verdict == "promoted"
    assert trained.model_version == "1" and set(trained.aliases) == {"champion", "challenger"}
    champion = client.get_model_version_by_alias("ct-main", "champion")
    assert champion.version == "1" and champion.run_id == trained.run_id
    assert 0.6 < trained.metrics["roc_auc"] < 1.0


def test_the_training_artifacts_carry_the_verdict_and_link_mlflow(trained, mlflow_server, client: MlflowClient) -> None:
    """Issue 9: the summary card says what happened without opening it, and links the run and the version."""
    flow_run_id = client.get_model_version("ct-main", trained.model_version).tags["mlops.prefect.flow_run_id"]
    import httpx
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        [summary] = [a for a in prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            "ct-main-training-summary"]))) if a.flow_run_id is not None and str(a.flow_run_id) == flow_run_id]
        links = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            "ct-main-training-mlflow-run", "ct-main-training-mlflow-model-version"])))
        links = [a for a in links if str(a.flow_run_id) == flow_run_id]
    assert summary.description.startswith("v1 promoted: roc_auc ") and "(no champion), data " in summary.description
    assert {a.key for a in links} == {"ct-main-training-mlflow-run", "ct-main-training-mlflow-model-version"}
    for artifact in links:  # a link artifact's data is its markdown: [title](url)
        url = artifact.data.rsplit("](", 1)[-1].rstrip(")")
        assert url.startswith(mlflow_server.url + "/#/"), artifact.data
        assert httpx.get(url.split("#")[0], timeout=30).status_code == 200
    assert trained.version_url and trained.version_url.endswith("/#/models/ct-main/versions/1")


def test_lineage_tags_lead_back_to_the_exact_data_and_code(trained, client: MlflowClient) -> None:
    version = client.get_model_version("ct-main", trained.model_version)
    tags = version.tags
    assert tags["mlops.data.rev"] == trained.data_rev and tags["mlops.data.md5"] == trained.data_md5
    code = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parents[2], capture_output=True,
                          text=True).stdout.strip()
    assert tags["mlops.code.commit"] == (code or "unknown")
    assert tags["mlops.prefect.flow_run_id"] and tags["mlops.gate.verdict"] == "promoted"
    assert json.loads(tags["mlops.params"])["C"] in (0.1, 1.0)
    run = client.get_run(trained.run_id)
    assert run.data.tags["mlops.data.rev"] == trained.data_rev
    assert run.inputs.dataset_inputs and f"@{trained.data_rev}" in run.inputs.dataset_inputs[0].dataset.source
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{trained.run_id}'")
    assert len(children) == 2 and all("valid_roc_auc" in c.data.metrics for c in children)
    artifacts = {a.path for a in client.list_artifacts(trained.run_id, "plots")}
    assert "plots/confusion_matrix.png" in artifacts
    # Walk back to the exact bytes with DVC and retrain-ready data.
    repo = DvcRepository.embedded()
    shown = subprocess.run(["git", "show", f"{trained.data_rev}:data/ct-main.parquet.dvc"], cwd=repo.repo_path,
                           capture_output=True, text=True).stdout
    assert trained.data_md5 in shown


def test_registered_model_loads_and_predicts(trained, mlflow_server, sample_dir: Path) -> None:
    import mlflow.pyfunc

    mlflow.set_tracking_uri(mlflow_server.url)  # the test, not the library, sets global state
    model = mlflow.pyfunc.load_model("models:/ct-main@champion")
    frame = pd.read_parquet(sample_dir / "day1.parquet").drop(columns=["churned", "event_time"])
    predictions = model.predict(frame.head(20))
    assert len(predictions) == 20 and set(pd.unique(predictions)) <= {0, 1}
    assert model.metadata.signature.inputs.input_names()[0] == "tenure_months"


def test_prefect_artifacts_are_published(trained) -> None:
    import asyncio

    async def keys() -> set[str]:
        async with get_client() as prefect:
            return {a.key for a in await prefect.read_artifacts() if a.key}

    found = asyncio.run(keys())
    assert {"ct-main-training-summary", "ct-main-training-metrics"} <= found


def test_second_run_on_identical_data_reuses_the_version(trained, mlflow_block_name: str, sample_dir: Path,
                                                         client: MlflowClient) -> None:
    again = continuous_training(data_file=str(sample_dir / "day0.parquet"), model_name="ct-main",
                                dataset_path="data/ct-main.parquet", training=SMALL, mlflow_block=mlflow_block_name)
    assert again.reused and again.model_version == trained.model_version and again.data_rev == trained.data_rev
    assert len(client.search_model_versions("name = 'ct-main'")) == 1


def test_worse_challenger_is_not_promoted(trained, mlflow_block_name: str, sample_dir: Path,
                                          client: MlflowClient) -> None:
    worse = continuous_training(data_file=str(sample_dir / "day1.parquet"), model_name="ct-main",
                                dataset_path="data/ct-main.parquet", training=WEAK, mlflow_block=mlflow_block_name)
    assert not worse.promoted and worse.verdict == "rejected"
    assert any("roc_auc" in r for r in worse.reasons)
    assert client.get_model_version_by_alias("ct-main", "champion").version == trained.model_version
    assert client.get_model_version_by_alias("ct-main", "challenger").version == worse.model_version
    tags = client.get_model_version("ct-main", worse.model_version).tags
    assert tags["mlops.gate.verdict"] == "rejected" and "roc_auc" in tags["mlops.rejected_reasons"]
    assert tags["mlops.gate.champion_version"] == trained.model_version


def test_invalid_data_stops_before_training(trained, mlflow_block_name: str, sample_dir: Path, tmp_path: Path,
                                            client: MlflowClient) -> None:
    before = len(client.search_model_versions("name = 'ct-main'"))
    bad = pd.read_parquet(sample_dir / "day1.parquet").drop(columns=["churned"])
    bad.loc[:3, "usage_gb"] = float("inf")
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path)
    with pytest.raises(DataValidationError) as err:
        continuous_training(data_file=str(path), model_name="ct-main", dataset_path="data/ct-bad.parquet",
                            training=SMALL, mlflow_block=mlflow_block_name)
    assert "missing_target" in str(err.value) and "inf" in str(err.value)
    assert len(client.search_model_versions("name = 'ct-main'")) == before
    assert client.get_model_version_by_alias("ct-main", "champion").version == trained.model_version


def test_unknown_estimator_fails_before_any_work(mlflow_block_name: str, sample_dir: Path) -> None:
    with pytest.raises(TrainingConfigError, match="Unknown estimator"):
        continuous_training(data_file=str(sample_dir / "day0.parquet"), model_name="ct-bad-estimator",
                            training=TrainingSpec(estimator="sklearn.ensemble.NoSuchForest"),
                            mlflow_block=mlflow_block_name)


def test_unreachable_mlflow_fails_clearly_within_bounds(sample_dir: Path, prefect_server: str) -> None:
    # A server that accepts each connection and hangs up: every HTTP attempt is counted, not timed.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def hang_up() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            connection.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    MlflowServer(tracking_uri=f"http://127.0.0.1:{listener.getsockname()[1]}", max_retries=1,
                 request_timeout_s=5).save("dead-mlflow", overwrite=True)
    try:
        with pytest.raises(TrackingServerError, match="Check that the tracking server is running"):
            continuous_training(data_file=str(sample_dir / "day0.parquet"), model_name="ct-dead",
                                dataset_path="data/ct-dead.parquet", training=SMALL, mlflow_block="dead-mlflow")
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
    # Bounded: 2 health-check attempts x (1 + max_retries=1) requests; MLflow's default is 8 per attempt.
    assert 1 <= len(accepted) <= 4, len(accepted)
    assert not (Path(DvcRepository.embedded().repo_path) / "data" / "ct-dead.parquet.dvc").exists()


def test_promotion_history_and_rollback(mlflow_block_name: str, lenient_policy: str, sample_dir: Path,
                                        client: MlflowClient) -> None:
    kwargs = dict(model_name="ct-rollback", dataset_path="data/ct-rollback.parquet", training=SMALL,
                  mlflow_block=mlflow_block_name, policy_block=lenient_policy)
    first = continuous_training(data_file=str(sample_dir / "day0.parquet"), **kwargs)
    second = continuous_training(data_file=str(sample_dir / "day1.parquet"), **kwargs)
    assert first.promoted and second.promoted and second.champion_before == first.model_version
    server = MlflowServer.load(mlflow_block_name)
    between = alias_history(server, "ct-rollback", "champion")[-1]

    result = rollback_model(model_name="ct-rollback", reason="bad feedback", mlflow_block=mlflow_block_name)
    assert (result.from_version, result.to_version) == (second.model_version, first.model_version)
    assert client.get_model_version_by_alias("ct-rollback", "champion").version == first.model_version
    history = alias_history(server, "ct-rollback", "champion")
    assert [(m.from_version, m.to_version) for m in history] == [(None, "1"), ("1", "2"), ("2", "1")]
    assert history[-1].reason == "rollback: bad feedback" and history[-1].flow_run_id
    import datetime as dt

    assert version_at(history, "champion", dt.datetime.fromisoformat(between.at)) == "2"
    assert version_at(history, "champion", dt.datetime.now(dt.UTC)) == "1"


def test_rollback_without_previous_champion_is_a_clear_error(trained, mlflow_block_name: str) -> None:
    with pytest.raises(RegistryError, match="no previous version"):
        rollback_model(model_name="ct-main", mlflow_block=mlflow_block_name)


def test_ad_hoc_call_with_embedded_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_MLOPS_HOME", str(tmp_path / "state"))
    summary = continuous_training(training=SMALL)
    assert summary.promoted and summary.model_version == "1"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'state' / 'mlflow' / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias("churn-classifier", "champion").version) == "1"
    assert (tmp_path / "state" / "dvc" / "dvc-remote").is_dir()


def test_the_run_materializes_the_dataset_then_the_model_as_prefect_assets(trained, mlflow_server,
                                                                           prefect_server: str) -> None:
    import httpx

    from tasks.prefect_assets import data_asset, model_asset

    repo = DvcRepository.embedded()
    data_key = data_asset(repo.repo_url or repo.repo_path, "data/ct-main.parquet")
    model_key = model_asset(mlflow_server.url, "ct-main")

    def materialized(key: str) -> list[dict]:
        body = {"filter": {"event": {"name": ["prefect.asset.materialization.succeeded"]},
                           "resource": {"id": [key]}}, "limit": 20}
        response = httpx.post(f"{prefect_server}/events/filter", json=body, timeout=10)
        response.raise_for_status()
        return response.json()["events"]

    wait_until(lambda: bool(materialized(model_key)) and bool(materialized(data_key)), 60, "the asset events")
    [model_event] = [e for e in materialized(model_key) if e["payload"].get("run_id") == trained.run_id]
    assert model_event["payload"]["version"] == trained.model_version
    assert {r["prefect.resource.id"]: r["prefect.resource.role"] for r in model_event["related"]}[data_key] == "asset"
    assert any(e["payload"].get("rev") == trained.data_rev and e["payload"].get("md5") == trained.data_md5
               for e in materialized(data_key))


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
