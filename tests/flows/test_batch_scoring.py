"""The batch-scoring flow: a file or a DVC rev scored with the champion, written and logged like online predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.batch_scoring import batch_scoring
from tasks.exceptions import DataValidationError
from tasks.inference_log import attach_ground_truth, read_inference_log
from tasks.sample_data import make_customer_frame

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import serving_block_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]

BLOCK = "serving-tests-batch"


@pytest.fixture(scope="module")
def block(session_home: Path, serving_registry: Any) -> Any:
    return serving_block_for(session_home, BLOCK)


def test_batch_scores_match_the_model_in_process_and_are_logged(block: Any, serving_registry: Any,
                                                                tmp_path: Path) -> None:
    import mlflow.sklearn

    data = make_customer_frame(400, seed=5, day=2)
    data_file = tmp_path / "to-score.csv"
    data.to_csv(data_file, index=False)
    summary = batch_scoring(data_file=str(data_file), model_name=serving_registry.model,
                            mlflow_block=serving_registry.mlflow_block, serving_block=BLOCK,
                            output_file=str(tmp_path / "scores.parquet"))
    champion = str(serving_registry.server().get_client().get_model_version_by_alias(serving_registry.model,
                                                                                      "champion").version)
    assert summary.model_version == champion and summary.rows == 400 and summary.logged == 400
    assert summary.dropped == 0

    scores = pd.read_parquet(summary.output_file)
    model = mlflow.sklearn.load_model(serving_registry.dirs[champion])
    features = json.loads(serving_registry.v1.tags["mlops.features"])
    source = pd.read_csv(data_file)
    assert scores["prediction"].tolist() == model.predict(source[features]).tolist()
    assert np.allclose(scores["score"], model.predict_proba(source[features])[:, 1])
    assert set(scores["model_version"]) == {champion} and scores["request_id"].is_unique
    assert "churned" in scores.columns and "event_time" in scores.columns  # carried through, not used

    logged = read_inference_log(block.log_path(), serving_registry.model)
    logged = logged[logged["request_id"].isin(scores["request_id"])]
    assert len(logged) == 400 and set(logged["source"]) == {"batch"} and set(logged["model_version"]) == {champion}
    merged = scores.merge(logged, on="request_id", suffixes=("", "_log"))
    assert (merged["prediction"] == merged["prediction_log"]).all()

    truth = dict(zip(scores["request_id"], source["churned"], strict=True))
    assert attach_ground_truth(block.log_path(), serving_registry.model, truth) == 400
    labelled = read_inference_log(block.log_path(), serving_registry.model, with_labels=True)
    labelled = labelled[labelled["request_id"].isin(truth)]
    assert labelled["label"].notna().all() and len(labelled) == 400


def test_batch_scoring_a_dvc_rev_with_a_given_version(block: Any, serving_registry: Any, tmp_path: Path) -> None:
    rev = serving_registry.v2.tags["mlops.data.rev"]
    summary = batch_scoring(data_rev=rev, dataset_path="data/serving.parquet", model_name=serving_registry.model,
                            version="2", log_predictions=False, mlflow_block=serving_registry.mlflow_block,
                            dvc_block=serving_registry.dvc_block, serving_block=BLOCK,
                            output_file=str(tmp_path / "v2.parquet"))
    assert summary.model_version == "2" and summary.rows == 1500 and summary.logged == 0
    assert rev in summary.source and pd.read_parquet(summary.output_file)["model_version"].eq("2").all()


def test_a_dataset_without_the_model_columns_is_a_clear_error(block: Any, serving_registry: Any,
                                                              tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    make_customer_frame(50, seed=1).drop(columns=["age"]).to_parquet(bad, index=False)
    with pytest.raises(DataValidationError, match=r"lacks the model's column\(s\) \['age'\]"):
        batch_scoring(data_file=str(bad), model_name=serving_registry.model,
                      mlflow_block=serving_registry.mlflow_block, serving_block=BLOCK)
