"""The per-model registry lock against a real mlflow server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from blocks.mlflow_server import MlflowServer
from tasks.exceptions import RegistryError
from tasks.mlflow_locks import TAG_OWNER, acquire, lock_name, model_lock, release

ROOT = Path(__file__).resolve().parents[2]


def test_lock_is_exclusive_names_its_holder_and_is_released(mlflow_server) -> None:
    server = MlflowServer(tracking_uri=mlflow_server.url)
    model = f"lock-{uuid.uuid4().hex[:6]}"
    held = acquire(server, model, flow_run_id="flow-run-a")
    with pytest.raises(RegistryError, match="Timed out") as err:
        acquire(server, model, timeout_s=1.0, poll_s=0.2)
    assert "flow-run-a" in str(err.value) and lock_name(model) in str(err.value)
    assert release(server, held) is True
    assert release(server, held) is False  # idempotent: no longer ours, nothing deleted
    with model_lock(server, model) as second:
        tags = MlflowClient(tracking_uri=mlflow_server.url).get_registered_model(lock_name(model)).tags
        assert tags[TAG_OWNER] == second.owner


def test_lock_of_a_sigkilled_owner_is_broken_by_the_next_taker(mlflow_server) -> None:
    server = MlflowServer(tracking_uri=mlflow_server.url)
    model = f"lock-{uuid.uuid4().hex[:6]}"
    script = ("import sys, time\n"
              "from blocks.mlflow_server import MlflowServer\n"
              "from tasks.mlflow_locks import acquire\n"
              f"acquire(MlflowServer(tracking_uri={mlflow_server.url!r}), {model!r})\n"
              "print('held', flush=True)\n"
              "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "held"  # blocks until the child holds the lock (or exits)
    finally:
        os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        proc.wait(timeout=30)
    # The lease (900 s) has not ended, but the owner process is gone: the lock is stale and broken.
    taken = acquire(server, model, timeout_s=60)
    assert release(server, taken)
    names = {m.name for m in MlflowClient(tracking_uri=mlflow_server.url).search_registered_models()}
    assert not {n for n in names if n.startswith(lock_name(model))}
