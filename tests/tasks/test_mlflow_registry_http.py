"""One registered version read over MLflow's REST API equals what MLflow's client returns (real ``mlflow server``)."""

from __future__ import annotations

import uuid

from blocks.mlflow_server import MlflowServer
from tasks.mlflow_registry import version_info, version_over_http


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
