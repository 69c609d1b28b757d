"""A registered version whose ``MLmodel`` is garbage in the registry's artifact store is made champion.

``deploy-model`` must fail with an error naming the model, the version, the file and what to do;
``champion`` moves back to the version that serves, with the reason on the broken version and in
the alias history; the status never claims the broken version serves.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pytest

from flows.deploy_model import TAG_FAILED_REASON, deploy_model
from tasks.exceptions import ServingError
from tasks.mlflow_alias_history import alias_history, set_model_alias
from tasks.mlflow_registry import register_model_version, version_info
from tasks.serving_endpoint import serving_status, stop_serving

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import serving_block_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]

BLOCK = "serving-tests-broken-artifact"
GARBAGE = "flavors: [this is: not, {valid yaml\n\t- at all: ]]\n"


def _local(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("file", "") else Path("/nonexistent")


@pytest.fixture(scope="module")
def corrupted_version(serving_registry: Any, session_home: Path, broken_version: Any) -> Any:
    """A new version with v1's model files, registered, then its MLmodel overwritten in the artifact store.

    Registered after the session's ``broken_version`` (v3), whose fixture expects that number.
    """
    server = serving_registry.server()
    client = server.get_client()
    experiment = client.get_experiment_by_name("serving-tests")
    run = client.create_run(experiment.experiment_id, run_name="corrupted-mlmodel")
    copy = session_home / "serving" / "corrupted-model" / "model"
    shutil.copytree(serving_registry.dirs["1"], copy, dirs_exist_ok=True)
    client.log_artifacts(run.info.run_id, str(copy), "model")
    client.set_terminated(run.info.run_id)
    source = f"{client.get_run(run.info.run_id).info.artifact_uri.rstrip('/')}/model"
    version = register_model_version.fn(server, serving_registry.model, source, run.info.run_id,
                                        dict(serving_registry.v1.tags))
    info = version_info(client.get_model_version(serving_registry.model, version.version))
    stored = [p for p in {_local(source) / "MLmodel", _local(info.source) / "MLmodel"} if p.is_file()]
    assert stored, f"cannot find the stored MLmodel of {info.source}"
    for path in stored:  # the registry's artifact store, not a local copy
        path.write_text(GARBAGE)
    return info


@pytest.fixture(scope="module")
def block(session_home: Path, serving_registry: Any) -> Any:
    """Its own endpoint; the champion the other serving tests expect is restored afterwards."""
    server = serving_registry.server()
    original = str(server.get_client().get_model_version_by_alias(serving_registry.model, "champion").version)
    serving = serving_block_for(session_home, BLOCK)
    yield serving
    stop_serving(serving)
    set_model_alias.fn(server, serving_registry.model, "champion", original, "restored after the broken-artifact test")


def test_corrupted_mlmodel_champion_moves_back_to_what_serves(block: Any, corrupted_version: Any,
                                                              serving_registry: Any, bentos: dict[str, Any]) -> None:
    server = serving_registry.server()
    name, broken = serving_registry.model, corrupted_version.version
    deploy_model(model_name=name, version="2", alias=None, mlflow_block=serving_registry.mlflow_block,
                 serving_block=BLOCK)
    set_model_alias.fn(server, name, "champion", "2", "v2 serves")
    set_model_alias.fn(server, name, "champion", broken, "promoted by the test")

    with pytest.raises(ServingError) as failure:
        deploy_model(model_name=name, mlflow_block=serving_registry.mlflow_block, serving_block=BLOCK)
    message = str(failure.value)
    assert f"{name} version {broken} cannot be deployed" in message
    assert "MLmodel" in message and "register the model again" in message and "deploy another version" in message
    assert "v2 keeps serving" in message and "moved back to v2" in message

    client = server.get_client()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    last = alias_history(server, name, "champion")[-1]
    assert (last.from_version, last.to_version) == (broken, "2") and "MLmodel" in last.reason
    assert "MLmodel" in client.get_model_version(name, broken).tags[TAG_FAILED_REASON]

    status = serving_status(block)
    assert status["state"] == "serving" and status["model_version"] == "2"
    assert status["answering"]["model_version"] == "2"
    answer = httpx.post(f"{block.endpoint_url()}/predict", json=bentos["2"].input_example[0])
    assert answer.status_code == 200 and answer.json()["model_version"] == "2"
