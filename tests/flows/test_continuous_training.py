"""The continuous-training and rollback flows end to end: real Prefect, real mlflow server, real git + DVC."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from servers import wait_until

from blocks.dvc_repository import DvcRepository
from blocks.mlflow_server import MlflowServer
from blocks.promotion_policy import PromotionPolicy
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
