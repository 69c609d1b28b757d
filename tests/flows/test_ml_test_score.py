"""The ml-test-score flow on a trained champion: real Prefect server, real mlflow server, real git + DVC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from blocks.promotion_policy import PromotionPolicy
from flows.continuous_training import continuous_training
from flows.ml_test_score import ml_test_score
from flows.reproduce_model import reproduce_model
from tasks.ml_test_checks import ITEMS, SECTIONS
from tasks.sklearn_training import TrainingSpec

MODEL = "mts"
SMALL = TrainingSpec(search_space={"C": [0.1, 1.0]})


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url)


@pytest.fixture(scope="module")
def trained(mlflow_block_name: str, sample_dir: Path):
    """A champion gated with slices and fairness (the policy names them), as the demo's policy does."""
    PromotionPolicy(slice_columns=["region"], max_slice_gap=0.5, sensitive_attribute="gender",
                    max_disparity=0.5).save("mts-policy", overwrite=True)
    summary = continuous_training(data_file=str(sample_dir / "day0.parquet"), model_name=MODEL,
                                  dataset_path=f"data/{MODEL}.parquet", training=SMALL,
                                  mlflow_block=mlflow_block_name, policy_block="mts-policy")
    assert summary.promoted, summary.reasons
    return summary


@pytest.fixture(scope="module")
def scored(trained, mlflow_block_name: str):
    return ml_test_score(model_name=MODEL, mlflow_block=mlflow_block_name,
                         manual_evidence={"data_3": "feature costs reviewed by the tests on the sample data"})


def test_a_trained_champion_scores_28_items_each_naming_its_evidence(trained, scored) -> None:
    assert scored.version == trained.model_version and len(scored.items) == 28
    assert [i.id for i in scored.items] == list(ITEMS)
    for section in SECTIONS:
        assert scored.sections[section] == sum(i.points for i in scored.items if i.section == section)
    assert scored.score == min(scored.sections.values())
    for item in scored.items:
        assert item.points in (0, 0.5, 1)
        assert item.evidence if item.points else item.note, item  # a point names its evidence; a zero its reason
    items = {i.id: i for i in scored.items}
    # What the training run records earns its points automatically ...
    for key in ("data_1", "data_2", "data_4", "data_7", "model_1", "model_3", "model_5", "model_6", "model_7",
                "infra_2", "infra_3", "infra_4", "infra_5", "infra_7", "monitoring_1", "monitoring_5"):
        assert items[key].points == 1 and items[key].mode == "automated", items[key]
    assert items["model_5"].passed and "tag mlops.gate.baseline" in items["model_5"].evidence
    assert items["monitoring_5"].passed and items["model_3"].evidence[0].startswith("2 trial runs")
    assert any(e.startswith("tests/") for e in items["infra_2"].evidence)
    # ... a person's documented check earns half, and what never happened earns nothing, with the reason.
    assert items["data_3"].points == 0.5 and items["data_3"].mode == "manual"
    assert items["infra_1"].points == 0 and "no reproduce-model run" in items["infra_1"].note
    assert items["monitoring_7"].points == 0 and "monitor-model" in items["monitoring_7"].note
    assert scored.description.startswith(f"ML Test Score {scored.score:g} (data ")


def test_the_report_is_on_mlflow_and_prefect(scored, client: MlflowClient) -> None:
    version = client.get_model_version(MODEL, scored.version)
    assert version.tags["mlops.ml_test_score"] == f"{scored.score:g}"
    assert json.loads(version.tags["mlops.ml_test_score.sections"]) == scored.sections
    assert version.tags["mlops.ml_test_score.manual.data_3"].startswith("feature costs reviewed")
    model_tags = client.get_registered_model(MODEL).tags
    assert model_tags["mlops.ml_test_score"] == f"{scored.score:g}" and model_tags[
        "mlops.ml_test_score.version"] == scored.version
    stored = {a.path for a in client.list_artifacts(scored.run_id, "ml_test_score")}
    assert stored == {"ml_test_score/ml_test_score.json", "ml_test_score/ml_test_score.md"}
    document = client.download_artifacts(scored.run_id, "ml_test_score/ml_test_score.json")
    assert json.loads(Path(document).read_text())["score"] == scored.score
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            f"{MODEL}-ml-test-score-summary", f"{MODEL}-ml-test-score-metrics"])))
    latest = {a.key: a for a in sorted(artifacts, key=lambda a: a.created)}
    summary = latest[f"{MODEL}-ml-test-score-summary"]
    assert summary.description == scored.description
    assert "## Tests for ML infrastructure" in summary.data and "infra_1: Training is reproducible" in summary.data
    assert len(latest[f"{MODEL}-ml-test-score-metrics"].data) > 100  # the 28-row table, serialised


def test_a_reproduction_earns_the_reproducibility_point(scored, mlflow_block_name: str) -> None:
    reproduction = reproduce_model(model_name=MODEL, version=scored.version, mlflow_block=mlflow_block_name)
    again = ml_test_score(model_name=MODEL, version=scored.version, mlflow_block=mlflow_block_name)
    item = next(i for i in again.items if i.id == "infra_1")
    assert item.points == 1 and item.passed == reproduction.reproduced
    assert reproduction.run_id in item.evidence[0]
    assert again.sections["infra"] == scored.sections["infra"] + 1
    assert next(i for i in again.items if i.id == "data_3").mode == "manual"  # the manual check was kept


def test_a_policy_requiring_a_higher_score_rejects_with_the_reason(scored, mlflow_block_name: str, sample_dir: Path,
                                                                   client: MlflowClient) -> None:
    recorded = float(client.get_registered_model(MODEL).tags["mlops.ml_test_score"])
    required = min(recorded + 0.5, 7.0)
    PromotionPolicy(min_improvement=-1.0, min_ml_test_score=required).save("mts-strict", overwrite=True)
    summary = continuous_training(data_file=str(sample_dir / "day1.parquet"), model_name=MODEL,
                                  dataset_path=f"data/{MODEL}.parquet", training=SMALL,
                                  mlflow_block=mlflow_block_name, policy_block="mts-strict")
    assert not summary.promoted and summary.verdict == "rejected"
    assert f"ML Test Score {recorded:g} is below the required {required:g}" in summary.reasons
    assert client.get_model_version_by_alias(MODEL, "champion").version == scored.version
