"""Faults between training and promotion: MLflow dropped mid-comparison, a training process SIGKILLed mid-way.

Real servers, real processes: the faults are injected by killing them (issue 8, items 1 and 2).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from mlflow import MlflowClient
from mlflow_proxy import RecordingProxy
from prefect.client.orchestration import get_client
from servers import start_mlflow_server, wait_until

from blocks.mlflow_server import MlflowServer
from blocks.promotion_policy import PromotionPolicy
from flows.common import model_cache_dir
from flows.continuous_training import continuous_training
from tasks.exceptions import RegistryError
from tasks.mlflow_alias_history import alias_history
from tasks.mlflow_locks import model_lock
from tasks.sklearn_training import TrainingSpec

SMALL = TrainingSpec(search_space={"C": [0.1, 1.0]})
WEAK = TrainingSpec(estimator="sklearn.dummy.DummyClassifier", params={"strategy": "prior"}, search_space={})
ROOT = Path(__file__).resolve().parents[2]


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(os.getpgid(process.pid), signal.SIGKILL)
    process.wait(timeout=60)


@pytest.fixture()
def own_mlflow(tmp_path: Path):
    """This test's own mlflow server (the session's one is shared and must not be killed)."""
    holder = {"server": start_mlflow_server(tmp_path / "mlflow", deadline_s=600)}
    yield holder
    holder["server"].stop()


def test_mlflow_dropped_while_the_champion_downloads_fails_the_run_and_promotes_nothing(
        own_mlflow: dict, tmp_path: Path, sample_dir: Path, prefect_server: str) -> None:
    server = own_mlflow["server"]
    with RecordingProxy(server.url) as proxy:
        block = MlflowServer(tracking_uri=proxy.url, experiment_name="faults", max_retries=0, request_timeout_s=10)
        block.save("fault-mlflow", overwrite=True)
        kwargs = dict(model_name="ct-fault-dl", dataset_path="data/ct-fault-dl.parquet", mlflow_block="fault-mlflow")
        first = continuous_training(data_file=str(sample_dir / "day0.parquet"), training=SMALL, **kwargs)
        assert first.promoted and first.model_version == "1"
        shutil.rmtree(model_cache_dir(block), ignore_errors=True)  # the champion must be fetched again

        dropped = threading.Event()
        # The champion's files are its LoggedModel's (models/<model_id>/artifacts), not its run's.
        files = MlflowClient(tracking_uri=proxy.url).get_model_version("ct-fault-dl", "1").source.split("/")[-1]

        def drop_mlflow(method: str, path: str) -> None:  # SIGKILL the real server at the champion's first file
            if method == "GET" and "mlflow-artifacts" in path and files in path and not dropped.is_set():
                dropped.set()
                _kill_group(server.process)

        proxy.before_forward = drop_mlflow
        with pytest.raises(RegistryError) as err:
            continuous_training(data_file=str(sample_dir / "day1.parquet"), training=WEAK, **kwargs)
        assert dropped.is_set()
        message = str(err.value)
        assert "Downloading model 'ct-fault-dl' version 1" in message and first.run_id in message
        assert "rerun" in message and "nothing was promoted" in message

        proxy.before_forward = None
        own_mlflow["server"] = start_mlflow_server(tmp_path / "mlflow", port=urlsplit(server.url).port,
                                                   deadline_s=600)
        client = MlflowClient(tracking_uri=proxy.url)
        assert client.get_model_version_by_alias("ct-fault-dl", "champion").version == "1"
        pending = client.get_model_version("ct-fault-dl", "2")
        assert pending.tags["mlops.promotion.state"] == "pending" and "mlops.gate.verdict" not in pending.tags
        assert [(m.from_version, m.to_version) for m in alias_history(block, "ct-fault-dl", "champion")] == [
            (None, "1")]

        # After the restart the same run compares properly with the real champion (and the worse one loses).
        again = continuous_training(data_file=str(sample_dir / "day1.parquet"), training=WEAK, **kwargs)
        assert again.model_version == "2" and again.reused and again.verdict == "rejected"
        assert again.champion_before == "1" and again.champion_metrics["roc_auc"] > again.metrics["roc_auc"]
        assert any("roc_auc" in reason for reason in again.reasons)
        assert client.get_model_version_by_alias("ct-fault-dl", "champion").version == "1"
        tags = client.get_model_version("ct-fault-dl", "2").tags
        assert tags["mlops.promotion.state"] == "rejected" and tags["mlops.gate.champion_version"] == "1"
        killed_run = client.get_run(pending.run_id)
        assert killed_run.info.status == "FAILED" and "interrupted" in killed_run.data.tags["mlops.interrupted_reason"]
        assert not [m for m in client.search_registered_models() if m.name.startswith("ct-fault-dl.lock")]


def _prefect_state(flow_run_id: str) -> str:
    async def read() -> str:
        async with get_client() as prefect:
            return (await prefect.read_flow_run(uuid.UUID(flow_run_id))).state.type.value

    return asyncio.run(read())


def test_sigkilled_training_is_closed_and_its_half_done_promotion_completed(
        mlflow_block_name: str, mlflow_server, sample_dir: Path, tmp_path: Path) -> None:
    PromotionPolicy(min_improvement=-1.0, guard_metrics={}, floors={}).save("lenient-faults", overwrite=True)
    kwargs = dict(model_name="ct-killed", dataset_path="data/ct-killed.parquet", training=SMALL,
                  mlflow_block=mlflow_block_name, policy_block="lenient-faults")
    first = continuous_training(data_file=str(sample_dir / "day0.parquet"), **kwargs)
    assert first.promoted and first.model_version == "1"
    block = MlflowServer.load(mlflow_block_name)
    client = MlflowClient(tracking_uri=mlflow_server.url)

    def version_two_pending() -> bool:
        found = client.search_model_versions("name = 'ct-killed'")
        return any(v.version == "2" and v.tags.get("mlops.promotion.state") == "pending" for v in found)

    script = ("from flows.continuous_training import continuous_training\n"
              "from tasks.sklearn_training import TrainingSpec\n"
              f"continuous_training(data_file={str(sample_dir / 'day1.parquet')!r}, model_name='ct-killed', "
              "dataset_path='data/ct-killed.parquet', "
              f"training=TrainingSpec.model_validate_json({SMALL.model_dump_json()!r}), "
              f"mlflow_block={mlflow_block_name!r}, policy_block='lenient-faults')\n")
    log = tmp_path / "killed-training.log"
    # Holding the model's registry lock keeps the training between "version registered" and "alias moved".
    with model_lock(block, "ct-killed"), open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_until(version_two_pending, 600, "version 2 registered as pending", process=proc,
                       log=lambda: log.read_text(errors="replace")[-3000:])
        finally:
            _kill_group(proc)
    pending = client.get_model_version("ct-killed", "2")
    assert "champion" not in pending.aliases
    killed_run = client.get_run(pending.run_id)
    assert killed_run.info.status == "RUNNING"
    killed_flow_run = killed_run.data.tags["mlops.prefect.flow_run_id"]
    assert _prefect_state(killed_flow_run) == "RUNNING"

    again = continuous_training(data_file=str(sample_dir / "day1.parquet"), **kwargs)
    assert again.model_version == "2" and again.reused and again.promoted
    assert (again.champion_before, again.champion_after) == ("1", "2")
    assert client.get_model_version_by_alias("ct-killed", "champion").version == "2"
    tags = client.get_model_version("ct-killed", "2").tags
    assert tags["mlops.promotion.state"] == "done" and tags["mlops.gate.champion_version"] == "1"
    assert tags["mlops.promotion.resumed_by"] and tags["mlops.promotion.resumed_by"] != killed_flow_run
    closed = client.get_run(pending.run_id)
    assert closed.info.status == "FAILED" and "is gone" in closed.data.tags["mlops.interrupted_reason"]
    assert _prefect_state(killed_flow_run) == "CRASHED"
    history = alias_history(block, "ct-killed", "champion")
    assert [(m.from_version, m.to_version) for m in history] == [(None, "1"), ("1", "2")]
