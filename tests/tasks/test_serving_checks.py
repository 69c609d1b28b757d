"""The serving checks: the type of a prediction by task, the smoke request against a real bento."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.bentoml_serving import start_bento_server, stop_bento_server
from tasks.exceptions import ServingError
from tasks.serving_checks import prediction_problem, smoke_test_server

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import serving_block_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]


@pytest.mark.parametrize(("prediction", "task_type", "classes", "ok"), [
    (1, "binary", [0, 1], True), ("1", "binary", [0, 1], True), (2, "binary", [0, 1], False),
    ("setosa", "multiclass", ["setosa", "virginica"], True), ("rose", "multiclass", ["setosa"], False),
    (3.5, "regression", None, True), (float("inf"), "regression", None, False), ("3.5", "regression", None, False),
    (True, "regression", None, False), (None, None, None, False), ([1], "binary", [0, 1], False), (7, None, None, True),
])
def test_prediction_types_by_task(prediction: Any, task_type: str | None, classes: list[Any] | None,
                                  ok: bool) -> None:
    problem = prediction_problem(prediction, task_type, classes)
    assert (problem is None) == ok, problem


def test_smoke_request_checks_the_answer_type(session_home: Path, bentos: dict[str, Any]) -> None:
    block = serving_block_for(session_home, "serving-tests-config-smoke")
    backend = start_bento_server.fn(block, bentos["1"])
    try:
        right = bentos["1"].model_copy(update={"task_type": "binary", "classes": [0, 1]})
        assert smoke_test_server.fn(backend.url, right).status == 200
        wrong = bentos["1"].model_copy(update={"task_type": "multiclass", "classes": ["a", "b", "c"]})
        with pytest.raises(ServingError, match="not one of the model's classes"):
            smoke_test_server.fn(backend.url, wrong)
        regression = bentos["1"].model_copy(update={"task_type": "regression", "classes": None})
        assert smoke_test_server.fn(backend.url, regression).status == 200  # 0 / 1 are finite numbers
    finally:
        stop_bento_server.fn(block, backend, drain=False)
