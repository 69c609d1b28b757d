"""Every block: `prefect block register` registers them all, and no block constructor does I/O."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from blocks import DvcRepository, MlflowServer, PromotionPolicy


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


def test_constructors_do_no_io(tmp_path: Path) -> None:
    repo = DvcRepository(repo_path=str(tmp_path / "nope" / "repo"), remote_url=str(tmp_path / "nope" / "remote"))
    MlflowServer(tracking_uri=f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}")
    PromotionPolicy()
    assert not (tmp_path / "nope").exists()
    assert repo.remote_name == "storage"
