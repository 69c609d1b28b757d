"""Packaging and serving tasks against a real ``bentoml serve`` answered over HTTP."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from tasks.bentoml_container import write_container_recipe
from tasks.bentoml_packaging import build_bento, parse_model_uri, resolve_model_version
from tasks.bentoml_serving import ensure_front, start_bento_server, stop_bento_server
from tasks.exceptions import PackagingError, RegistryError, ServingError
from tasks.inference_log import read_inference_log
from tasks.serving_checks import smoke_test_server
from tasks.serving_endpoint import stop_serving
from tasks.system import process_alive

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import serving_block_for, wait_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]


@pytest.fixture(scope="module")
def block(session_home: Path) -> Any:
    return serving_block_for(session_home, "serving-tests-tasks")


@pytest.fixture(scope="module")
def backend(block: Any, bentos: dict[str, Any]) -> Any:
    """Version 1's bento served by a real ``bentoml serve`` on a free port (no front)."""
    server = start_bento_server.fn(block, bentos["1"])
    yield server
    stop_bento_server.fn(block, server, drain=False)
    assert not process_alive(server.pid)


@pytest.fixture(scope="module")
def record(bentos: dict[str, Any]) -> dict[str, Any]:
    return dict(bentos["1"].input_example[0])


def in_process(model_dir: str, records: list[dict[str, Any]]) -> tuple[list[Any], list[float]]:
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(model_dir)
    frame = pd.DataFrame.from_records(records)
    return model.predict(frame).tolist(), model.predict_proba(frame)[:, 1].tolist()


# -- packaging ---------------------------------------------------------------------------------------
def test_model_uri_forms_are_understood() -> None:
    assert parse_model_uri("models:/churn@champion") == ("churn", "champion", None)
    assert parse_model_uri("models:/churn/7") == ("churn", None, "7")
    assert parse_model_uri("churn") == ("churn", None, None)
    with pytest.raises(RegistryError, match="models:/<name>@<alias>"):
        parse_model_uri("models:/churn@")


def test_resolve_by_alias_uri_and_unknown_alias(serving_registry: Any) -> None:
    server = serving_registry.server()
    found = resolve_model_version.fn(server, f"models:/{serving_registry.model}@champion")
    champion = server.get_client().get_model_version_by_alias(serving_registry.model, "champion")
    assert found.version == str(champion.version) and found.run_id == champion.run_id
    assert resolve_model_version.fn(server, f"models:/{serving_registry.model}/2").version == "2"
    with pytest.raises(RegistryError, match="no alias 'nope'"):
        resolve_model_version.fn(server, serving_registry.model, alias="nope")
    with pytest.raises(RegistryError, match="no version 99"):
        resolve_model_version.fn(server, serving_registry.model, version="99")


def test_bento_carries_lineage_labels_and_is_not_locked(bentos: dict[str, Any], serving_registry: Any) -> None:
    bento = bentos["1"]
    meta = yaml.safe_load((Path(bento.path) / "bento.yaml").read_text())
    labels = meta["labels"]
    assert labels["model_name"] == serving_registry.model and labels["model_version"] == "1"
    assert labels["run_id"] == serving_registry.v1.run_id
    assert labels["data_rev"] == serving_registry.v1.tags["mlops.data.rev"] and len(labels["data_rev"]) == 40
    python_env = Path(bento.path) / "env" / "python"
    assert not (python_env / "requirements.lock.txt").exists()
    assert "scikit-learn==" in (python_env / "requirements.txt").read_text()
    assert meta["services"][0]["models"][0]["tag"] == bento.model_tag
    assert bento.features[:2] == ["tenure_months", "monthly_charges"] and len(bento.input_example) == 3


def test_rebuilding_the_same_version_reuses_the_bento(bentos: dict[str, Any], serving_registry: Any,
                                                      session_home: Path) -> None:
    block = serving_block_for(session_home, "serving-tests-rebuild")
    again = build_bento.fn(block, serving_registry.v1, serving_registry.dirs["1"])
    assert again.tag == bentos["1"].tag and not again.built


def test_concurrent_builds_of_one_bento_build_it_once(serving_registry: Any, tmp_path: Path) -> None:
    """The training flow pre-builds a promoted bento while deploy-model may build it too: one build, one bento."""
    from blocks.bentoml_serving import BentoMLServing

    block = BentoMLServing(store_path=str(tmp_path / "bentoml"), log_dir=str(tmp_path / "log"), port=3999)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: build_bento.fn(block, serving_registry.v1, serving_registry.dirs["1"]),
                                range(2)))
    assert results[0].tag == results[1].tag
    assert sorted(r.built for r in results) == [False, True]
    assert len(list((tmp_path / "bentoml" / "bentos").glob("*/*/bento.yaml"))) == 1


def test_concurrent_downloads_of_one_version_both_get_the_complete_copy(serving_registry: Any,
                                                                         tmp_path: Path) -> None:
    """The training flow's pre-build and a deploy may download the same version at once."""
    from tasks.mlflow_registry import download_model_version

    server = serving_registry.server()
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: download_model_version.fn(server, serving_registry.v1, str(tmp_path)),
                              range(2)))
    assert paths[0] == paths[1] and (Path(paths[0]) / "MLmodel").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [Path(paths[0]).name]  # no partial copy left behind


def test_container_recipe_is_written_without_docker(bentos: dict[str, Any], session_home: Path) -> None:
    block = serving_block_for(session_home, "serving-tests-recipe")
    recipe = write_container_recipe.fn(block, bentos["1"])
    text = Path(recipe.dockerfile).read_text()
    assert "FROM " in text and "bentoml" in text.lower()
    if recipe.image is None:
        assert "No Docker engine" in recipe.message and "bentoml containerize" in recipe.message


def test_a_model_without_signature_cannot_be_packaged(serving_registry: Any, tmp_path: Path,
                                                      session_home: Path) -> None:
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    mlflow.sklearn.save_model(DummyClassifier().fit([[0], [1]], [0, 1]), str(tmp_path / "model"))
    block = serving_block_for(session_home, "serving-tests-nosig")
    with pytest.raises(PackagingError, match="no signature"):
        build_bento.fn(block, serving_registry.v1, str(tmp_path / "model"))


# -- serving -----------------------------------------------------------------------------------------
def test_a_bento_that_cannot_start_fails_fast_with_the_log(block: Any, bentos: dict[str, Any]) -> None:
    missing = bentos["1"].model_copy(update={"tag": "serving-churn:does-not-exist"})
    with pytest.raises(ServingError, match="exited with"):
        start_bento_server.fn(block, missing)


def test_valid_record_and_batch_are_answered_like_the_model_in_process(backend: Any, bentos: dict[str, Any],
                                                                       serving_registry: Any) -> None:
    records = bentos["1"].input_example
    expected, scores = in_process(serving_registry.dirs["1"], records)
    one = httpx.post(f"{backend.url}/predict", json=records[0], headers={"x-request-id": "task-single"})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model_name"] == "serving-churn" and body["model_version"] == "1"
    assert body["request_id"] == "task-single" and one.headers["x-model-version"] == "1"
    assert body["prediction"] == expected[0] and math.isclose(body["score"], scores[0], rel_tol=1e-9)
    many = httpx.post(f"{backend.url}/predict", json=records).json()
    assert many["predictions"] == expected
    assert np.allclose(many["scores"], scores) and len(set(many["request_ids"])) == len(records)


def test_smoke_request_names_the_version_that_answered(backend: Any, bentos: dict[str, Any]) -> None:
    result = smoke_test_server.fn(backend.url, bentos["1"])
    assert result.status == 200 and result.model_version == "1" and result.records == 3
    with pytest.raises(ServingError, match="expected version 2"):
        smoke_test_server.fn(backend.url, bentos["2"])


def _bad_cases(record: dict[str, Any], limit: int) -> list[tuple[str, bytes, int, str]]:
    def dump(value: Any) -> bytes:
        return json.dumps(value).encode()

    without_age = {k: v for k, v in record.items() if k != "age"}
    nan_text = dump({**record, "tenure_months": 1.0}).replace(b"1.0", b"NaN", 1)
    inf_text = dump({**record, "usage_gb": 1.5}).replace(b"1.5", b"Infinity", 1)
    return [
        ("missing field", dump(without_age), 422, "age"),
        ("extra field", dump({**record, "favourite_colour": "blue"}), 422, "favourite_colour"),
        ("string for an integer", dump({**record, "age": "old"}), 422, "age"),
        ("float for an integer", dump({**record, "support_calls": 1.5}), 422, "support_calls"),
        ("number for a string", dump({**record, "contract": 12}), 422, "contract"),
        ("boolean for an integer", dump({**record, "senior": True}), 422, "senior"),
        ("string for a number", dump({**record, "monthly_charges": "70.5"}), 422, "monthly_charges"),
        ("NaN where required", nan_text, 422, "tenure_months"),
        ("infinity where required", inf_text, 422, "usage_gb"),
        ("null where required", dump({**record, "region": None}), 422, "region"),
        ("bad record inside a batch", dump([record, {**record, "age": "x"}]), 422, "records[1].age"),
        ("batch of non-objects", dump([1, 2]), 422, "records[0]"),
        ("empty batch", b"[]", 400, "records"),
        ("oversized batch", dump([record] * (limit + 1)), 413, "records"),
        ("not JSON", b"this is not json", 400, "body"),
        ("truncated JSON", dump(record)[:-5], 400, "body"),
        ("JSON scalar", b"42", 400, "body"),
        ("empty body", b"", 400, "body"),
        ("body over the byte limit", b"[" + b" " * (300 * 1024) + b"]", 413, "body"),
    ]


BAD_NAMES = [case[0] for case in _bad_cases({"age": 1}, 1)]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_requests_get_4xx_naming_the_field(backend: Any, block: Any, record: dict[str, Any], name: str) -> None:
    case = {c[0]: c for c in _bad_cases(record, block.max_request_records)}[name]
    _, body, status, field = case
    response = httpx.post(f"{backend.url}/predict", content=body, headers={"content-type": "application/json"},
                          timeout=30)
    assert response.status_code == status, response.text
    payload = response.json()
    assert field in payload["error"], payload
    assert field in " ".join(payload["fields"])


def test_service_stays_up_after_a_barrage_of_bad_requests(backend: Any, block: Any, record: dict[str, Any]) -> None:
    cases = _bad_cases(record, block.max_request_records) * 3
    with httpx.Client(base_url=backend.url, timeout=30) as client, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda c: client.post("/predict", content=c[1]).status_code, cases))
        assert all(400 <= s < 500 for s in statuses), statuses
        assert client.get("/predict").status_code == 405
        assert client.get("/readyz").status_code == 200
        ok = client.post("/predict", json=record)
    assert ok.status_code == 200 and ok.json()["model_version"] == "1"
    assert process_alive(backend.pid)


def test_predictions_reach_the_inference_log(backend: Any, block: Any, record: dict[str, Any]) -> None:
    answers = {}
    with httpx.Client(base_url=backend.url) as client:
        for i in range(5):
            rid = f"log-check-{i}"
            answers[rid] = client.post("/predict", json={**record, "age": 30 + i}, headers={"x-request-id": rid}).json()

    def logged() -> pd.DataFrame | None:
        frame = read_inference_log(block.log_path(), "serving-churn")
        frame = frame[frame["request_id"].isin(answers)]
        return frame if len(frame) == len(answers) else None

    frame = wait_for(logged, 30, "the five predictions in the inference log").set_index("request_id")
    for rid, answer in answers.items():
        row = frame.loc[rid]
        assert row["model_version"] == "1" and row["model_name"] == "serving-churn" and row["source"] == "online"
        assert row["prediction"] == answer["prediction"] and math.isclose(row["score"], answer["score"])
        assert row["age"] == 30 + int(rid.rsplit("-", 1)[1]) and row["contract"] == record["contract"]
    stats = httpx.get(f"{backend.url}/inference-log/stats").json()
    assert stats["dropped"] == 0 and stats["written"] >= 5


def test_front_without_backend_answers_503_and_guards_its_admin_api(session_home: Path) -> None:
    block = serving_block_for(session_home, "serving-tests-front")
    try:
        first = ensure_front.fn(block)
        assert ensure_front.fn(block)["pid"] == first["pid"]  # idempotent: the running front is reused
        response = httpx.post(f"{block.endpoint_url()}/predict", json={})
        assert response.status_code == 503 and "no model is deployed" in response.json()["error"]
        assert httpx.get(f"{block.endpoint_url()}/-/mlops/status").status_code == 403
        assert httpx.post(f"{block.endpoint_url()}/-/mlops/switch", json={"backend": "http://x:1"}).status_code == 403
    finally:
        stopped = stop_serving(block)
    assert stopped["stopped"] == [f"front (pid {first['pid']})"] and not process_alive(first["pid"])


@pytest.mark.parametrize("estimator", ["sklearn.linear_model.LogisticRegression",
                                       "sklearn.ensemble.RandomForestClassifier"])
def test_predictor_gives_exactly_what_the_pipeline_gives(estimator: str) -> None:
    from tasks._serving.predictor import Predictor
    from tasks.sample_data import make_customer_frame
    from tasks.sklearn_training import build_pipeline, make_estimator

    frame = make_customer_frame(600, seed=3)
    features = [c for c in frame.columns if c not in ("churned", "event_time")]
    params = {"n_estimators": 20, "random_state": 0} if "Forest" in estimator else {"max_iter": 500}
    pipeline = build_pipeline(make_estimator(estimator, params), frame, features)
    pipeline.fit(frame[features], frame["churned"])
    predictions, scores = Predictor(pipeline)(frame[features])
    assert predictions.tolist() == pipeline.predict(frame[features]).tolist()
    assert np.array_equal(scores, pipeline.predict_proba(frame[features])[:, 1])


def test_a_front_port_taken_by_another_program_is_a_clear_error(session_home: Path) -> None:
    import socket

    block = serving_block_for(session_home, "serving-tests-taken")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", block.port))
        squatter.listen()
        with pytest.raises(ServingError, match="could not start"):
            ensure_front.fn(block)
    assert stop_serving(block)["stopped"] == []
