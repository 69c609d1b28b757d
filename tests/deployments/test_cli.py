"""The real ``prefect-mlops`` CLI in a subprocess: a missing, unreachable or empty registry and an unknown model
are clear errors with a non-zero exit; with one registered model and no ``--model``, that model is used."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.mlflow_server import MlflowServer
from deployments.definitions import PROJECT_ROOT
from tasks.system import free_port

CLI = [sys.executable, "-m", "deployments.cli"]


def run_cli(*args: str, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_MLOPS_HOME": str(state), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([*CLI, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def empty_registry_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised MLflow SQLite registry with no model (copied by the tests that add models)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("registry") / "empty.db"
    assert MlflowClient(tracking_uri=f"sqlite:///{db}").search_registered_models() == []
    return db


def registry_block(name: str, db: Path, models: list[str], empty_db: Path) -> str:
    from mlflow import MlflowClient

    shutil.copy(empty_db, db)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    for model in models:
        client.create_registered_model(model)
    MlflowServer(tracking_uri=f"sqlite:///{db}", experiment_name="cli").save(name, overwrite=True)
    return name


def test_status_without_a_registry_says_which_block_to_pass_and_creates_no_database(tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = run_cli("status", state=state)
    assert out.returncode == 1, out.stdout + out.stderr
    db = state / "mlflow" / "mlflow.db"
    assert f"no MLflow database at {db}" in out.stderr and "--mlflow-block" in out.stderr, out.stderr
    assert not db.exists()


def test_unreachable_registry_is_a_clear_error(prefect_server: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    MlflowServer(tracking_uri=url, experiment_name="cli").save("cli-unreachable", overwrite=True)
    out = run_cli("--mlflow-block", "cli-unreachable", "history", state=tmp_path / "state")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"registry {url} (block 'cli-unreachable') does not answer" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_block_is_a_clear_error(prefect_server: str, tmp_path: Path) -> None:
    out = run_cli("--mlflow-block", "no-such-block", "status", state=tmp_path / "state")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "cannot load the MlflowServer block 'no-such-block'" in out.stderr, out.stderr


def test_empty_registry_and_unknown_model_are_errors_one_model_is_the_default(
        prefect_server: str, tmp_path: Path, empty_registry_db: Path) -> None:
    state = tmp_path / "state"
    empty = registry_block("cli-empty", tmp_path / "empty.db", [], empty_registry_db)
    out = run_cli("--mlflow-block", empty, "history", state=state)
    assert out.returncode == 1 and "has no registered model" in out.stderr, out.stdout + out.stderr

    one = registry_block("cli-one", tmp_path / "one.db", ["only-model"], empty_registry_db)
    out = run_cli("--mlflow-block", one, "history", state=state)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "only-model: no recorded alias moves" in out.stderr, out.stderr

    for command in ("history", "status", "rollback"):
        out = run_cli("--mlflow-block", one, command, "--model", "churn-classifier", state=state)
        assert out.returncode == 1, command + out.stdout + out.stderr
        assert "no registered model 'churn-classifier'" in out.stderr and "only-model" in out.stderr, out.stderr

    two = registry_block("cli-two", tmp_path / "two.db", ["model-a", "model-b"], empty_registry_db)
    out = run_cli("--mlflow-block", two, "status", state=state)
    assert out.returncode == 1 and "has 2 models (model-a, model-b): pass --model NAME" in out.stderr, out.stderr
