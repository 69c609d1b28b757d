"""The registry tasks: the champion read fails closed, concurrent downloads of one version, REST reads."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from tests_support import closed_port

from blocks.mlflow_server import MlflowServer
from tasks.exceptions import RegistryError
from tasks.mlflow_registry import alias_version, version_info, version_over_http

pytest_plugins = ["serving_fixtures"]


def test_champion_read_fails_closed_when_the_registry_is_unreachable() -> None:
    dead = MlflowServer(tracking_uri=f"http://127.0.0.1:{closed_port()}", max_retries=0, request_timeout_s=3)
    with pytest.raises(RegistryError, match=r"Reading alias 'champion' of model 'm'.*rerun"):
        alias_version(dead, "m", "champion")


def test_missing_model_or_alias_is_no_champion(mlflow_server) -> None:
    server = MlflowServer(tracking_uri=mlflow_server.url)
    name = f"no-alias-{uuid.uuid4().hex[:6]}"
    assert alias_version(server, name, "champion") is None
    MlflowClient(tracking_uri=mlflow_server.url).create_registered_model(name)
    assert alias_version(server, name, "champion") is None


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


def test_a_version_read_over_http_equals_the_clients(mlflow_block_name: str) -> None:
    server = MlflowServer.load(mlflow_block_name)
    client = server.get_client()
    name = f"http-read-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    run = client.create_run(client.get_experiment_by_name("tests").experiment_id
                            if client.get_experiment_by_name("tests") else client.create_experiment("tests"))
    client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                tags={"mlops.data.rev": "abc123", "mlops.features": '["a", "b"]'})
    second = client.create_model_version(name, f"runs:/{run.info.run_id}/model2", run.info.run_id)
    client.set_registered_model_alias(name, "champion", second.version)

    by_alias = version_over_http(server, name, alias="champion")
    assert by_alias == version_info(client.get_model_version_by_alias(name, "champion"))
    assert by_alias is not None and by_alias.version == "2" and by_alias.aliases == ["champion"]
    by_number = version_over_http(server, name, version="1")
    assert by_number == version_info(client.get_model_version(name, "1"))
    assert by_number is not None and by_number.tags["mlops.data.rev"] == "abc123" and by_number.aliases == []
    # Anything but a clear answer leaves the decision to MLflow's client (which raises as before).
    assert version_over_http(server, name, alias="no-such-alias") is None
    assert version_over_http(server, name, version="99") is None
    assert version_over_http(server, f"{name}-missing", alias="champion") is None
    assert version_over_http(server, name) is None
    assert version_over_http(MlflowServer.embedded(), name, alias="champion") is None
