"""Packaging a registered version as a bento: model URIs, lineage labels, the task in the config, reuse, bad models."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.bentoml_packaging import build_bento, parse_model_uri, read_mlflow_signature, resolve_model_version
from tasks.exceptions import PackagingError, RegistryError

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


def test_a_model_without_signature_cannot_be_packaged(serving_registry: Any, tmp_path: Path,
                                                      session_home: Path) -> None:
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    mlflow.sklearn.save_model(DummyClassifier().fit([[0], [1]], [0, 1]), str(tmp_path / "model"))
    block = serving_block_for(session_home, "serving-tests-nosig")
    with pytest.raises(PackagingError, match="no signature"):
        build_bento.fn(block, serving_registry.v1, str(tmp_path / "model"))
