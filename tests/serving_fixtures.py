"""Session fixtures of the serving tests: a registry with trained versions, bentos, a serving block.

Registered as a pytest plugin by the serving test modules (``pytest_plugins = ["serving_fixtures"]``),
so that one registry, one set of trained versions and one BentoML store are shared by all of them.
Everything lives under the session folder; every process started is stopped by PID.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import free_port, wait_until

MODEL = "serving-churn"
MLFLOW_BLOCK = "serving-tests-mlflow"
DVC_BLOCK = "serving-tests-dvc"

BROKEN_MODULE = '''
"""A scikit-learn compatible classifier whose predictions always fail (for the broken-deployment test)."""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class ExplodingClassifier(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        raise RuntimeError("ExplodingClassifier is broken on purpose")

    def predict_proba(self, X):
        raise RuntimeError("ExplodingClassifier is broken on purpose")
'''


@dataclass
class Registry:
    """The serving tests' registry: blocks, trained versions, their local copies."""

    mlflow_block: str
    dvc_block: str
    model: str
    v1: Any
    v2: Any
    dirs: dict[str, str]
    sample_file: Path

    def server(self) -> Any:
        from blocks.mlflow_server import MlflowServer

        return MlflowServer.load(self.mlflow_block)


@pytest.fixture(scope="session")
def serving_registry(session_home: Path, prefect_server: str) -> Registry:
    """An embedded (SQLite) MLflow registry and DVC repo with two trained versions of ``serving-churn``."""
    from blocks.dvc_repository import DvcRepository
    from blocks.mlflow_server import MlflowServer
    from flows.common import model_cache_dir
    from flows.continuous_training import continuous_training
    from tasks.mlflow_registry import download_model_version
    from tasks.sample_data import make_customer_frame
    from tasks.sklearn_training import TrainingSpec

    root = session_home / "serving"
    MlflowServer.embedded(root=root / "mlflow", experiment_name="serving-tests").save(MLFLOW_BLOCK, overwrite=True)
    DvcRepository.embedded(root=root / "dvc").save(DVC_BLOCK, overwrite=True)
    sample = root / "samples" / "day0.parquet"
    sample.parent.mkdir(parents=True, exist_ok=True)
    make_customer_frame(1500, seed=11, day=0).to_parquet(sample, index=False)
    common = dict(data_file=str(sample), model_name=MODEL, dataset_path="data/serving.parquet",
                  mlflow_block=MLFLOW_BLOCK, dvc_block=DVC_BLOCK)
    first = continuous_training(training=TrainingSpec(search_space={"C": [1.0]}), **common)
    second = continuous_training(training=TrainingSpec(search_space={"C": [0.01]}), **common)
    assert (first.model_version, second.model_version) == ("1", "2")
    server = MlflowServer.load(MLFLOW_BLOCK)
    client = server.get_client()
    versions = {v: client.get_model_version(MODEL, v) for v in ("1", "2")}
    from tasks.mlflow_registry import version_info

    infos = {v: version_info(mv) for v, mv in versions.items()}
    dirs = {v: download_model_version.fn(server, info, model_cache_dir(server)) for v, info in infos.items()}
    return Registry(MLFLOW_BLOCK, DVC_BLOCK, MODEL, infos["1"], infos["2"], dirs, sample)


@pytest.fixture(scope="session")
def broken_version(serving_registry: Registry, session_home: Path) -> Any:
    """Register version 3: same signature and input example, but every prediction raises.

    Its estimator class ships with the model (MLflow ``code_paths``), so the bento can import it.
    """
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    from tasks.mlflow_registry import register_model_version, version_info

    code_dir = session_home / "serving" / "broken-code"
    code_dir.mkdir(parents=True, exist_ok=True)
    module_file = code_dir / "mlops_exploding_estimator.py"
    module_file.write_text(textwrap.dedent(BROKEN_MODULE))
    sys.path.insert(0, str(code_dir))
    try:
        import mlops_exploding_estimator
    finally:
        sys.path.remove(str(code_dir))

    features = json.loads(serving_registry.v1.tags["mlops.features"])
    frame = pd.read_parquet(serving_registry.sample_file)[features].head(50)
    model = mlops_exploding_estimator.ExplodingClassifier().fit(frame, [0, 1] * 25)
    with warnings.catch_warnings():  # MLflow's hint about integer columns and missing values
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(frame, pd.Series([0] * len(frame)))
    server = serving_registry.server()
    client = server.get_client()
    experiment = client.get_experiment_by_name("serving-tests")
    run = client.create_run(experiment.experiment_id, run_name="broken-model")
    local = session_home / "serving" / "broken-model" / "model"
    mlflow.sklearn.save_model(model, str(local), signature=signature, input_example=frame.head(3),
                              code_paths=[str(module_file)], serialization_format="cloudpickle")
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    source = f"{client.get_run(run.info.run_id).info.artifact_uri.rstrip('/')}/model"
    tags = dict(serving_registry.v1.tags)
    version = register_model_version.fn(server, serving_registry.model, source, run.info.run_id, tags)
    assert version.version == "3"
    return version_info(client.get_model_version(serving_registry.model, "3"))


def serving_block_for(session_home: Path, name: str, **overrides: Any) -> Any:
    """Save and return a BentoMLServing block with its own port, sharing the session's store."""
    from blocks.bentoml_serving import BentoMLServing

    root = session_home / "serving"
    block = BentoMLServing(store_path=str(root / "bentoml"), log_dir=str(root / "inference-log"), port=free_port(),
                           log_flush_interval_s=0.3, readiness_timeout_s=90, drain_timeout_s=20,
                           max_request_records=200, max_request_bytes=256 * 1024, **overrides)
    block.save(name, overwrite=True)
    return block


def wait_for(check: Any, deadline_s: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something other than None / False; fail with ``what`` at the deadline."""
    try:
        return wait_until(check, deadline_s, what, interval=interval, ignore=(),
                          done=lambda value: value is not None and value is not False)
    except TimeoutError as exc:
        raise AssertionError(f"{what} not within {deadline_s:.0f}s") from exc


def latest_artifact(key: str) -> str | None:
    """Return the data of the newest Prefect artifact with this key, or None."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    latest = max(artifacts, key=lambda a: a.created, default=None)
    return None if latest is None else str(latest.data)


def serving_processes() -> list[str]:
    """Serving processes (bentoml serve, its workers, the front, the supervisor) of this test session still running.

    A process belongs to this session when it inherited its ``PREFECT_MLOPS_HOME`` (other test
    sessions may run on the same machine at the same time); zombies are not running.
    """
    import psutil

    home = os.environ.get("PREFECT_MLOPS_HOME", "")
    out = []
    for proc in psutil.process_iter():
        try:
            cmd = " ".join(proc.cmdline())
            if proc.status() == psutil.STATUS_ZOMBIE or not any(
                    m in cmd for m in ("bentoml serve", "tasks._serving.front", "_bentoml_impl.worker",
                                       "tasks.bentoml_serving supervise")):
                continue
            if proc.environ().get("PREFECT_MLOPS_HOME") != home:
                continue
        except psutil.Error:
            continue
        out.append(f"{proc.pid}: {cmd[:160]}")
    return out


@pytest.fixture(scope="session")
def bentos(serving_registry: Registry, session_home: Path) -> dict[str, Any]:
    """Bentos of versions 1 and 2 in the session's BentoML store."""
    from tasks.bentoml_packaging import build_bento

    block = serving_block_for(session_home, "serving-tests-build")
    return {v: build_bento.fn(block, info, serving_registry.dirs[v])
            for v, info in (("1", serving_registry.v1), ("2", serving_registry.v2))}


@pytest.fixture(scope="session", autouse=True)
def no_serving_orphans() -> Iterator[None]:
    """After the session, no serving process started by these tests may still run."""
    before = set(serving_processes())
    yield
    left = [p for p in serving_processes() if p not in before]
    assert not left, f"serving processes left running: {left}"


@pytest.fixture(scope="session", autouse=True)
def drain_prefect_logs_before_the_server_stops(prefect_server: str) -> Iterator[None]:
    """Send the run logs still queued while the test server runs.

    Without this, the log worker retries against the stopped server at exit for over a minute
    (belongs in tests/conftest.py, where it would serve every test module).
    """
    yield
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
