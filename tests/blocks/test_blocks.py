"""Blocks: registration, save/load round trips against the real Prefect server, no I/O in constructors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import SecretStr

from blocks import DataContract, DvcRepository, MlflowServer, PromotionPolicy


def test_prefect_block_register_registers_every_block(prefect_server: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    out = subprocess.run([sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run([sys.executable, "-m", "prefect", "block", "type", "ls"], env=env,
                            capture_output=True, text=True, timeout=120).stdout
    for slug in ("mlops-mlflow-server", "mlops-dvc-repository", "mlops-promotion-policy", "mlops-data-contract",
                 "mlops-monitoring-policy", "mlops-bentoml-serving"):
        assert slug in listed


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


def test_constructors_do_no_io(tmp_path: Path) -> None:
    repo = DvcRepository(repo_path=str(tmp_path / "nope" / "repo"), remote_url=str(tmp_path / "nope" / "remote"))
    MlflowServer(tracking_uri=f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}")
    PromotionPolicy()
    assert not (tmp_path / "nope").exists()
    assert repo.remote_name == "storage"


def test_data_contract_infer_edit_save_load(prefect_server: str) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"], "y": [0, 1, 0]})
    contract = DataContract.infer(frame, target="y", min_rows=3)
    assert contract.columns["x"].kind == "numeric"
    assert contract.columns["c"].categories == ["a", "b"]
    assert contract.columns["y"].categories == ["0", "1"]
    contract.columns["c"].categories.append("z")
    contract.save("roundtrip-contract", overwrite=True)
    loaded = DataContract.load("roundtrip-contract")
    assert loaded.columns["c"].categories == ["a", "b", "z"]
    assert loaded.columns["x"].min < 1.0 < 3.0 < loaded.columns["x"].max


def test_contract_infer_rejects_missing_target() -> None:
    with pytest.raises(ValueError, match="target column 'nope'"):
        DataContract.infer(pd.DataFrame({"x": [1]}), target="nope")
