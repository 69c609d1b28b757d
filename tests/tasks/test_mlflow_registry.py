"""The registry tasks: the champion read fails closed, concurrent downloads of one version."""

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
from tasks.mlflow_registry import alias_version

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
