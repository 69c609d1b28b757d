"""The MlflowServer block: save/load keeps the secret, credentials stay scoped to the block's own client's calls
(issue 8, item 9), and a new embedded SQLite store opened by several processes at once is created once.

A recording proxy in front of the real mlflow server shows what went over the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow_proxy import RecordingProxy
from pydantic import SecretStr

from blocks.mlflow_server import MlflowServer
from deployments.definitions import PROJECT_ROOT
from flows.continuous_training import continuous_training
from tasks.sklearn_training import TrainingSpec

SMALL = TrainingSpec(search_space={"C": [0.1, 1.0]})


@pytest.fixture()
def proxy(mlflow_server):
    with RecordingProxy(mlflow_server.url) as running:
        yield running


def _auth(proxy: RecordingProxy) -> list[str | None]:
    return [headers.get("Authorization") for _, _, headers in proxy.seen()]


def test_token_reaches_only_its_own_client(proxy: RecordingProxy) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    with_token = MlflowServer(tracking_uri=proxy.url, token=SecretStr(secret), request_timeout_s=7, max_retries=1)
    without = MlflowServer(tracking_uri=proxy.url)
    with_token.get_client().search_experiments()
    assert _auth(proxy) == [f"Bearer {secret}"]
    proxy.clear()
    without.get_client().search_experiments()  # the next block, no token: no Authorization header at all
    assert _auth(proxy) == [None]
    assert not any(secret in v for v in os.environ.values())
    assert not any(k.startswith("MLFLOW_TRACKING_") for k in os.environ)
    child = subprocess.run([sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                           capture_output=True, text=True, check=True)
    assert secret not in child.stdout and "MLFLOW_TRACKING_TOKEN" not in json.loads(child.stdout)


def test_concurrent_clients_of_two_blocks_never_mix_credentials(proxy: RecordingProxy) -> None:
    basic = MlflowServer(tracking_uri=proxy.url, username="alice", password=SecretStr(uuid.uuid4().hex))
    bare = MlflowServer(tracking_uri=proxy.url)
    errors: list[BaseException] = []

    def hammer(block: MlflowServer, label: str) -> None:
        try:
            client = block.get_client()
            for _ in range(15):
                client.get_experiment_by_name(label)  # a GET: the label is in the recorded path
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(b, n)) for b, n in ((basic, "alpha"), (bare, "bravo"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    seen = proxy.seen()
    assert len(seen) == 30
    for _, path, headers in seen:
        has_auth = headers.get("Authorization", "").startswith("Basic ")
        assert has_auth == ("alpha" in path), (path, headers.get("Authorization"))


def test_training_run_with_secrets_sends_them_but_records_them_nowhere(proxy: RecordingProxy, sample_dir: Path,
                                                                       tmp_path: Path, prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    secret = f"tok-{uuid.uuid4().hex}"
    MlflowServer(tracking_uri=proxy.url, experiment_name="tests-secrets", token=SecretStr(secret)).save(
        "secret-mlflow", overwrite=True)
    summary = continuous_training(data_file=str(sample_dir / "day0.parquet"), model_name="ct-secrets",
                                  dataset_path="data/ct-secrets.parquet", training=SMALL, mlflow_block="secret-mlflow")
    assert summary.promoted
    auth = _auth(proxy)
    assert len(auth) > 20 and set(auth) == {f"Bearer {secret}"}  # every request, artifacts included, had it
    assert not any(secret in v for v in os.environ.values())

    client = MlflowClient(tracking_uri=proxy.url)
    run = client.get_run(summary.run_id)
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary.run_id}'")
    for r in [run, *children]:
        assert secret not in json.dumps([r.data.params, r.data.tags])
    version = client.get_model_version("ct-secrets", summary.model_version)
    assert secret not in json.dumps([version.tags, client.get_registered_model("ct-secrets").tags])
    assert json.loads(version.tags["mlops.libraries"])["scikit-learn"]  # library versions recorded too
    local = client.download_artifacts(summary.run_id, "", str(tmp_path / "artifacts"))
    texts = [p.read_bytes() for p in Path(local).rglob("*") if p.is_file()]
    assert texts and not any(secret.encode() in t for t in texts)

    async def logs() -> list[str]:
        async with get_client() as prefect:
            found = await prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[uuid.UUID(run.data.tags["mlops.prefect.flow_run_id"])])))
            return [log.message for log in found]

    messages = asyncio.run(logs())
    assert messages and not any(secret in m for m in messages)


OPEN_STORE = """
import sys
from pathlib import Path
from blocks.mlflow_server import MlflowServer
server = MlflowServer.embedded(Path(sys.argv[1]))
print(len(server.get_client().search_registered_models()))
"""


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    # Before the lock, two processes migrating one new database failed with
    # "table _alembic_tmp_experiments already exists" (two scheduled watch-data runs in CI).
    root = tmp_path / "state" / "mlflow"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(root)], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert out.strip() == "0"
    assert (root / "mlflow.db").stat().st_size > 0


def test_mlflow_block_round_trip_keeps_secret_and_builds_client(prefect_server: str) -> None:
    block = MlflowServer(tracking_uri="http://127.0.0.1:9", experiment_name="x", username="u",
                         password=SecretStr("s3cret"))
    block.save("roundtrip-mlflow", overwrite=True)
    loaded = MlflowServer.load("roundtrip-mlflow")
    assert loaded.password is not None and loaded.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(loaded)
    client = loaded.get_client()
    assert client.tracking_uri == "http://127.0.0.1:9"
    assert client._registry_uri == "http://127.0.0.1:9"
