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

from tasks.bentoml_serving import ensure_front, start_bento_server, stop_bento_server
from tasks.exceptions import ServingError
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
