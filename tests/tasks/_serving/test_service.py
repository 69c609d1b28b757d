"""The serving process over real HTTP: any label type, passthrough columns, hostile values, OpenAPI, event loop.

Real scikit-learn models on bundled datasets (iris, penguins, breast cancer, diabetes), saved with MLflow, packaged
with ``build_bento`` and served by ``bentoml serve`` (see ``tests/serving_models.py``).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tasks.inference_log import read_inference_log

pytest.register_assert_rewrite("serving_fixtures", "serving_models")
from serving_fixtures import wait_for  # noqa: E402

pytest_plugins = ["serving_fixtures", "serving_models"]


def records_of(model: Any, n: int, start: int = 0) -> list[dict[str, Any]]:
    """JSON records of dataset rows (NaN -> null; numpy -> Python)."""
    frame = model.frame.iloc[start:start + n]
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in json.loads(frame.to_json(orient="records"))]


@pytest.mark.parametrize("key", ["iris", "penguins", "cancer", "diabetes"])
def test_every_label_type_answers_like_the_model_in_process(key: str, served: Any, dataset_models: Any,
                                                            runtime_block: Any) -> None:
    model = dataset_models[key]
    backend = served[key]
    rows = records_of(model, 6, start=0 if key != "penguins" else 1)  # penguins row 3 has missing values
    frame = pd.DataFrame.from_records(rows, columns=list(model.frame.columns)).astype(model.frame.dtypes.to_dict())
    expected = model.model.predict(frame).tolist()
    with httpx.Client(base_url=backend.url, timeout=30) as client:
        one = client.post("/predict", json=rows[0], headers={"x-request-id": f"{key}-one"})
        many = client.post("/predict", json=rows, headers={"x-request-id": f"{key}-many"})
    assert one.status_code == 200, one.text
    assert many.status_code == 200, many.text
    single, batch = one.json(), many.json()
    assert single["prediction"] == expected[0] and type(single["prediction"]) is type(expected[0])
    assert batch["predictions"] == expected
    if model.task_type == "regression":
        assert single["score"] is None and single["probabilities"] is None
        assert batch["scores"] is None and batch["probabilities"] is None
        assert np.allclose(batch["predictions"], expected)
    else:
        proba = model.model.predict_proba(frame)
        classes = [c.item() if hasattr(c, "item") else c for c in model.model.classes_]
        assert list(single["probabilities"]) == [str(c) for c in classes]
        assert np.allclose([list(p.values()) for p in batch["probabilities"]], proba)
        if model.task_type == "binary":  # score = P(positive label) = P(True)
            assert np.allclose(batch["scores"], proba[:, classes.index(True)])
        else:  # score = P(predicted class)
            assert np.allclose(batch["scores"], proba.max(axis=1))
    info = httpx.get(f"{backend.url}/model").json()
    assert info["task_type"] == model.task_type

    def logged() -> pd.DataFrame | None:
        log = read_inference_log(runtime_block.log_path(), f"rt-{key}")
        log = log[log["request_id"].str.startswith(f"{key}-")]
        return log if len(log) == 1 + len(rows) else None

    log = wait_for(logged, 30, f"the {key} predictions in the inference log").set_index("request_id")
    assert log.loc[f"{key}-one", "prediction"] == expected[0]
    assert log.loc[f"{key}-many-5", "prediction"] == pytest.approx(expected[5]) if key == "diabetes" else \
        log.loc[f"{key}-many-5", "prediction"] == expected[5]
    if model.task_type != "regression":
        assert json.loads(log.loc[f"{key}-one", "probabilities"]) == pytest.approx(single["probabilities"])
    else:
        assert log["probabilities"].isna().all()


def test_passthrough_event_time_is_validated_logged_and_never_given_to_the_model(
        served: Any, dataset_models: Any, runtime_block: Any) -> None:
    model = dataset_models["iris"]
    backend = served["iris"]
    row = records_of(model, 1)[0]
    with httpx.Client(base_url=backend.url, timeout=30) as client:
        ok = client.post("/predict", json={**row, "event_time": "2026-02-03T04:05:06Z"},
                         headers={"x-request-id": "pass-ok"})
        without = client.post("/predict", json=row, headers={"x-request-id": "pass-none"})
        bad = client.post("/predict", json={**row, "event_time": "yesterday"})
        number = client.post("/predict", json={**row, "event_time": 1767225600})
    assert ok.status_code == 200 and without.status_code == 200, (ok.text, without.text)
    assert ok.json()["prediction"] == without.json()["prediction"] == model.model.predict(model.frame.head(1))[0]
    for response in (bad, number):
        assert response.status_code == 422 and "event_time" in response.json()["fields"], response.text

    def logged() -> pd.DataFrame | None:
        log = read_inference_log(runtime_block.log_path(), "rt-iris")
        log = log[log["request_id"].isin(["pass-ok", "pass-none"])]
        return log if len(log) == 2 else None

    log = wait_for(logged, 30, "the passthrough predictions in the log").set_index("request_id")
    assert log.loc["pass-ok", "event_time"] == pd.Timestamp("2026-02-03T04:05:06Z")
    assert pd.isna(log.loc["pass-none", "event_time"])
    assert isinstance(log.loc["pass-ok", "prediction"], str)


HUGE = "1" + "0" * 400


@pytest.mark.parametrize(("name", "field", "text"), [
    ("integer beyond int64", "year", "9223372036854775808"),
    ("integer below int64", "year", "-9223372036854775809"),
    ("309-digit integer in an integer field", "year", "1" + "0" * 308),
    ("5000-digit integer in an integer field", "body", "9" * 5000),  # beyond the JSON parser: 400 for the body
    ("309-digit integer beyond float64 in a float field", "bill_length_mm", "2" + "0" * 308),
    ("float overflowing", "body_mass_g", "1e400"),
    ("negative float overflowing", "body_mass_g", "-1e400"),
    ("string in a float field", "flipper_length_mm", '"12.5"'),
    ("float in an integer field", "year", "2007.5"),
])
def test_values_outside_a_columns_range_are_refused_naming_the_field(served: Any, dataset_models: Any, name: str,
                                                                       field: str, text: str) -> None:
    row = records_of(dataset_models["penguins"], 1)[0]
    body = json.dumps({**row, "year" if field == "body" else field: "@@"}).replace('"@@"', text)
    response = httpx.post(f"{served['penguins'].url}/predict", content=body, timeout=30)
    assert response.status_code == (400 if field == "body" else 422), (name, response.status_code, response.text[:300])
    assert field in response.json()["fields"] and field in response.json()["error"]


@pytest.mark.parametrize(("name", "body", "status"), [
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, 400),
    ("lone surrogate", b'{"island": "\\ud800"}', 400),
    ("invalid UTF-8", b'{"island": "\xff\xfe"}', 400),
    ("huge body", b"[" + b"1," * 400_000 + b"1]", 413),
    ("object of arrays", b'{"island": [1, 2]}', 422),
])
def test_hostile_bodies_get_4xx(served: Any, name: str, body: bytes, status: int) -> None:
    response = httpx.post(f"{served['penguins'].url}/predict", content=body, timeout=30)
    assert response.status_code == status, (name, response.text[:300])
    assert response.json()["error"]


def test_openapi_describes_predict_model_and_schema_and_lists_nothing_that_answers_404(
        served: Any, dataset_models: Any) -> None:
    backend = served["iris"]
    doc = httpx.get(f"{backend.url}/docs.json", timeout=30).json()
    paths = doc["paths"]
    assert {"/predict", "/model", "/schema"} <= set(paths)
    assert "/metrics" not in paths  # metrics are off in these backends: BentoML lists it anyway, answering 404
    record = doc["components"]["schemas"]["MlopsRecord"]
    assert set(record["properties"]) == {*dataset_models["iris"].frame.columns, "event_time"}
    assert record["properties"]["event_time"]["format"] == "date-time"
    one = doc["components"]["schemas"]["MlopsPrediction"]
    assert one["properties"]["prediction"]["enum"] == ["setosa", "versicolor", "virginica"]
    assert set(paths["/predict"]["post"]["responses"]) >= {"200", "400", "413", "422"}
    with httpx.Client(base_url=backend.url, timeout=30) as client:
        for path, item in paths.items():
            for method in item:
                if "{" in path:
                    continue
                answer = client.request(method.upper(), path, json={} if method == "post" else None)
                assert answer.status_code != 404, f"{method.upper()} {path} is listed but answers 404"


def test_a_slow_model_does_not_stall_the_event_loop(runtime_block: Any, slow_bento: Any) -> None:
    from tasks.bentoml_serving import start_bento_server, stop_bento_server

    backend = start_bento_server.fn(runtime_block, slow_bento)
    try:
        answers: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{backend.url}/predict", json={"x": 1.0}, timeout=60)))
        slow.start()
        # /model answers while the model is busy scoring (3 s): with scoring in the event loop it could not.
        info = wait_for(lambda: (lambda i: i if i["scoring"] == 1 else None)(
            httpx.get(f"{backend.url}/model", timeout=10).json()), 30, "/model answering while the model scores")
        assert info["batches"] == 0
        ready = httpx.get(f"{backend.url}/readyz", timeout=10)
        assert ready.status_code == 200
        assert slow.is_alive(), "the slow prediction finished before /readyz answered: the test proves nothing"
        slow.join(60)
        assert answers and answers[0].status_code == 200 and answers[0].json()["score"] == 0.75
    finally:
        stop_bento_server.fn(runtime_block, backend, drain=False)


def test_the_timeout_middleware_patch_applies_and_cancels_its_timer() -> None:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    from tasks._serving.service import patch_bentoml_timeout_middleware

    assert patch_bentoml_timeout_middleware(), "the TimeoutMiddleware patch no longer applies (BentoML changed)"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def one_request() -> list[Any]:
        loop = asyncio.get_running_loop()
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        await TimeoutMiddleware(app, timeout=60)({"type": "http"}, receive, send)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        return [h for h in loop._scheduled if not h.cancelled() and h.when() > loop.time() + 30]

    assert asyncio.run(one_request()) == [], "the per-request timer is still pending after the response"


def test_old_configs_without_task_keys_read_the_task_from_the_model(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from tasks._serving.predictor import Predictor

    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    binary = Predictor(LogisticRegression().fit(frame, [False, False, False, True, True, True]))
    assert (binary.task_type, binary.classes, binary.positive_index) == ("binary", [False, True], 1)
    multi = Predictor(LogisticRegression().fit(frame, ["a", "a", "b", "b", "c", "c"]))
    predictions, scores, proba = multi.predict(frame)
    assert multi.task_type == "multiclass" and multi.plain(predictions) == ["a", "a", "b", "b", "c", "c"]
    assert np.allclose(scores, proba.max(axis=1)) and list(multi.probabilities(proba)[0]) == ["a", "b", "c"]
    regression = Predictor(LinearRegression().fit(frame, [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]))
    assert regression.task_type == "regression" and regression.predict(frame)[1] is None
    named = Predictor(LogisticRegression().fit(frame, ["yes", "yes", "yes", "no", "no", "no"]), "binary", "yes")
    assert named.classes[named.positive_index] == "yes"
