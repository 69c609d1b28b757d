"""What a person sees in MLflow after two trainings (a weak champion, then a better challenger promoted over it).

Real Prefect server, real mlflow server, real git + DVC: the version description, the chosen
hyperparameters as run params, the champion's metrics beside the challenger's, ``challenger`` cleared
on promotion with the move recorded, the readable alias history, the links back to the Prefect flow
run, the plots (size, names) and ``evaluation.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image

from flows.continuous_training import continuous_training
from tasks import lineage as L
from tasks.mlflow_alias_history import HISTORY_ARTIFACT, alias_history
from tasks.mlflow_pages import NOTE_TAG
from tasks.sklearn_training import TrainingSpec

MODEL = "pages-model"
WEAK = TrainingSpec(estimator="sklearn.dummy.DummyClassifier", params={"strategy": "prior"}, search_space={})
SMALL = TrainingSpec(search_space={"C": [0.1, 1.0]})


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url)


@pytest.fixture(scope="module")
def runs(mlflow_block_name: str, sample_dir: Path) -> tuple[Any, Any]:
    """v1: a weak first champion (no floors); v2: a better challenger on new data, promoted over it."""
    from blocks.promotion_policy import PromotionPolicy

    PromotionPolicy(min_improvement=-1.0, guard_metrics={}, floors={}, beat_baseline=False).save("pages-no-floors",
                                                                                              overwrite=True)
    first = continuous_training(data_file=str(sample_dir / "day0.parquet"), model_name=MODEL,
                                dataset_path="data/pages.parquet", training=WEAK, mlflow_block=mlflow_block_name,
                                policy_block="pages-no-floors")
    second = continuous_training(data_file=str(sample_dir / "day1.parquet"), model_name=MODEL,
                                 dataset_path="data/pages.parquet", training=SMALL, mlflow_block=mlflow_block_name)
    assert first.promoted and second.promoted, (first.reasons, second.reasons)
    return first, second


def test_version_description_says_verdict_metric_against_champion_and_data(runs, client: MlflowClient) -> None:
    first, second = runs
    version = client.get_model_version(MODEL, second.model_version)
    headline = version.description.splitlines()[0]
    match = re.fullmatch(r"promoted: roc_auc (0\.\d+) \(([+-]0\.\d{3}) vs v1\), data ([0-9a-f]{7})", headline)
    assert match, version.description
    assert match.group(3) == second.data_rev[:7]
    champion_auc = client.get_run(second.run_id).data.metrics["champion_roc_auc"]
    assert float(match.group(2)) == pytest.approx(second.metrics["roc_auc"] - champion_auc, abs=1.5e-3)
    assert float(match.group(2)) > 0
    assert "Prefect flow run" in version.description and "deployment" in version.description
    first_version = client.get_model_version(MODEL, first.model_version)
    assert first_version.description.startswith("promoted: roc_auc") and "(no champion)" in first_version.description


def test_chosen_hyperparameters_are_params_of_the_parent_run(runs, client: MlflowClient) -> None:
    _, second = runs
    chosen = json.loads(client.get_model_version(MODEL, second.model_version).tags[L.TAG_PARAMS])
    params = client.get_run(second.run_id).data.params
    assert chosen and all(params[k] == str(v) for k, v in chosen.items()), (chosen, params)


def test_champion_metrics_sit_beside_the_challengers(runs, client: MlflowClient) -> None:
    _, second = runs
    metrics = client.get_run(second.run_id).data.metrics
    for name in ("roc_auc", "accuracy"):
        assert f"test_{name}" in metrics and f"champion_{name}" in metrics
    assert metrics["champion_roc_auc"] == pytest.approx(0.5, abs=0.05)  # the prior-only dummy


def test_challenger_is_cleared_on_promotion_and_the_history_says_so(runs, client: MlflowClient,
                                                                    mlflow_server) -> None:
    from blocks.mlflow_server import MlflowServer

    _, second = runs
    assert client.get_model_version_by_alias(MODEL, "champion").version == second.model_version
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(MODEL, "challenger")
    moves = alias_history(MlflowServer(tracking_uri=mlflow_server.url), MODEL, "challenger")
    assert [(m.from_version, m.to_version) for m in moves] == [
        (None, "1"), ("1", None), (None, "2"), ("2", None)]
    assert "became champion" in moves[-1].reason


def test_alias_history_is_a_readable_table_on_the_versions_run(runs, client: MlflowClient, tmp_path: Path) -> None:
    _, second = runs
    local = client.download_artifacts(second.run_id, HISTORY_ARTIFACT, str(tmp_path))
    text = Path(local).read_text()
    assert "| # | when (UTC) | alias | from | to | by | why | Prefect flow run |" in text
    assert re.search(r"\| champion \| 1 \| 2 \|", text) and re.search(r"\| challenger \| 2 \| - \|", text)
    assert len([line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]) == 6
    description = client.get_registered_model(MODEL).description
    assert "Now: `champion` -> v2." in description and HISTORY_ARTIFACT in description
    assert re.search(r"\| 5 \| .* \| champion \| 1 \| 2 \|", description)


def test_version_page_keeps_lineage_but_not_the_training_process(runs, client: MlflowClient) -> None:
    _, second = runs
    version_tags = client.get_model_version(MODEL, second.model_version).tags
    run_tags = client.get_run(second.run_id).data.tags
    for key in (L.TAG_DATA_REV, L.TAG_DATA_MD5, L.TAG_CODE_COMMIT, L.TAG_FLOW_RUN_ID, L.TAG_DEPLOYMENT, L.TAG_PARAMS,
                L.TAG_GATE_VERDICT, L.TAG_GATE_CHAMPION, L.TAG_LIBRARIES):
        assert version_tags.get(key), key
    assert L.TAG_PROCESS_PID not in version_tags and run_tags[L.TAG_PROCESS_PID]


def test_runs_and_versions_link_back_to_the_prefect_flow_run(runs, client: MlflowClient,
                                                             prefect_server: str) -> None:
    _, second = runs
    run = client.get_run(second.run_id)
    version = client.get_model_version(MODEL, second.model_version)
    ui = prefect_server.removesuffix("/api")
    for tags in (run.data.tags, version.tags):
        url = tags[L.TAG_FLOW_RUN_URL]
        assert url == f"{ui}/runs/flow-run/{tags[L.TAG_FLOW_RUN_ID]}"
        assert tags[L.TAG_DEPLOYMENT]
    # The suite's server runs without the UI: the same id resolves on its API.
    answer = httpx.get(f"{prefect_server}/flow_runs/{run.data.tags[L.TAG_FLOW_RUN_ID]}", timeout=10)
    assert answer.status_code == 200 and answer.json()["id"] == run.data.tags[L.TAG_FLOW_RUN_ID]
    note = run.data.tags[NOTE_TAG]
    assert note.startswith("**promoted: roc_auc") and run.data.tags[L.TAG_FLOW_RUN_URL] in note
    trials = client.search_runs([run.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert trials and all(t.data.tags.get(L.TAG_FLOW_RUN_URL) == run.data.tags[L.TAG_FLOW_RUN_URL] for t in trials)


def test_plots_are_large_titled_and_evaluation_json_points_at_them(runs, client: MlflowClient,
                                                                   tmp_path: Path) -> None:
    _, second = runs
    names = {Path(a.path).name for a in client.list_artifacts(second.run_id, "plots")}
    assert {"confusion_matrix.png", "roc_curve.png", "pr_curve.png", "permutation_importance.png",
            "coefficients.png"} <= names
    for name in ("roc_curve.png", "confusion_matrix.png"):
        with Image.open(client.download_artifacts(second.run_id, f"plots/{name}", str(tmp_path))) as image:
            assert image.size == (1200, 900)
    doc = json.loads(Path(client.download_artifacts(second.run_id, "evaluation/evaluation.json",
                                                    str(tmp_path))).read_text())
    assert doc["plots"] and all(p.startswith("plots/") and Path(p).name in names for p in doc["plots"])
    assert "slice_metrics" not in doc and "fairness" not in doc and "not computed" in doc["see"]["slices"]
    features = set(client.get_model_version(MODEL, second.model_version).tags[L.TAG_FEATURES].strip("[]")
                   .replace('"', "").split(", "))
    assert set(doc["importance"]) <= features and "contract" in doc["importance"]


def test_the_dockerfile_is_stored_on_the_versions_run_and_linked(runs, client: MlflowClient, mlflow_server,
                                                                 tmp_path: Path) -> None:
    from blocks.mlflow_server import MlflowServer
    from tasks.bentoml_container import ContainerRecipe, store_container_recipe

    _, second = runs
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.12-slim\n" + "RUN true\n" * 90)
    recipe = ContainerRecipe(bento_tag=f"{MODEL}:v2-abc", dockerfile=str(dockerfile), image=None, message="no docker")
    link = store_container_recipe.fn(MlflowServer(tracking_uri=mlflow_server.url), recipe, second.run_id)
    assert link == (f"{mlflow_server.url}/#/experiments/{client.get_run(second.run_id).info.experiment_id}/runs/"
                    f"{second.run_id}/artifacts/bento/v2-abc/Dockerfile")
    served = httpx.get(f"{mlflow_server.url}/get-artifact", params={"path": "bento/v2-abc/Dockerfile",
                                                                    "run_uuid": second.run_id}, timeout=10)
    assert served.status_code == 200 and served.text == dockerfile.read_text()
    assert store_container_recipe.fn(MlflowServer(tracking_uri=mlflow_server.url),
                                     recipe.model_copy(update={"dockerfile": ""}), second.run_id) is None
