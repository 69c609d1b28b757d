"""The bento config carries the task (shared contract 4), and the smoke request checks the output type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.bentoml_packaging import build_bento, read_mlflow_signature
from tasks.bentoml_serving import start_bento_server, stop_bento_server
from tasks.exceptions import PackagingError, ServingError
from tasks.serving_checks import prediction_problem, smoke_test_server

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import serving_block_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]

TASK_KEYS = ("task_type", "classes", "positive_label", "time_column", "passthrough_columns")


def _config(bento: Any) -> dict[str, Any]:
    found = list(Path(bento.path).rglob("mlops_bento.json"))
    assert found, f"no mlops_bento.json in {bento.path}"
    return json.loads(found[0].read_text())


def test_task_tags_reach_the_bento_config_and_its_digest(serving_registry: Any, session_home: Path) -> None:
    block = serving_block_for(session_home, "serving-tests-config")
    tags = {**serving_registry.v1.tags, "mlops.task_type": "binary", "mlops.classes": "[0, 1]",
            "mlops.positive_label": "1", "mlops.time_column": "event_time"}
    tagged = serving_registry.v1.model_copy(update={"tags": tags})
    bento = build_bento.fn(block, tagged, serving_registry.dirs["1"])
    cfg = _config(bento)
    assert {k: cfg[k] for k in TASK_KEYS} == {
        "task_type": "binary", "classes": [0, 1], "positive_label": 1, "time_column": "event_time",
        "passthrough_columns": [{"name": "event_time", "type": "datetime"}]}
    assert (bento.task_type, bento.classes, bento.positive_label) == ("binary", [0, 1], 1)
    # Another label set is another bento (the keys are part of the digest).
    relabelled = tagged.model_copy(update={"tags": {**tags, "mlops.classes": '["no", "yes"]',
                                                    "mlops.positive_label": '"yes"'}})
    other = build_bento.fn(block, relabelled, serving_registry.dirs["1"])
    assert other.tag != bento.tag and _config(other)["classes"] == ["no", "yes"]


def test_old_versions_without_task_tags_get_defaults(serving_registry: Any, session_home: Path) -> None:
    block = serving_block_for(session_home, "serving-tests-config-old")
    old = serving_registry.v1.model_copy(update={"tags": {k: v for k, v in serving_registry.v1.tags.items()
                                                          if k not in ("mlops.task_type", "mlops.classes",
                                                                       "mlops.positive_label",
                                                                       "mlops.time_column")}})
    cfg = _config(build_bento.fn(block, old, serving_registry.dirs["1"]))
    assert {k: cfg[k] for k in TASK_KEYS} == {"task_type": None, "classes": None, "positive_label": None,
                                              "time_column": None, "passthrough_columns": []}


def test_garbage_mlmodel_is_a_packaging_error_naming_the_file(serving_registry: Any, tmp_path: Path,
                                                              session_home: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(serving_registry.dirs["1"], copy)
    (copy / "MLmodel").write_text("flavors: [unbalanced: {\n")
    with pytest.raises(PackagingError, match="MLmodel file .*cannot be read"):
        read_mlflow_signature(copy)
    block = serving_block_for(session_home, "serving-tests-config-broken")
    expected = r"(?s)serving-churn version 1 cannot be deployed.*MLmodel.*register the model again"
    with pytest.raises(PackagingError, match=expected):
        build_bento.fn(block, serving_registry.v1, str(copy))


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
