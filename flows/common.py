"""Block loading shared by the flows: a saved block by name, or the embedded default."""

from __future__ import annotations

import hashlib
from pathlib import Path

from blocks.data_contract import DataContract
from blocks.dvc_repository import DvcRepository
from blocks.mlflow_server import MlflowServer
from blocks.promotion_policy import PromotionPolicy
from blocks.settings import state_dir

DEFAULT_MODEL_NAME = "churn-classifier"
DEFAULT_DATASET_PATH = "data/train.parquet"


def load_mlflow(name: str | None) -> MlflowServer:
    """Load the named MLflow block, or the embedded SQLite default."""
    return MlflowServer.load(name) if name else MlflowServer.embedded()


def load_dvc(name: str | None) -> DvcRepository:
    """Load the named DVC repository block, or the embedded default."""
    return DvcRepository.load(name) if name else DvcRepository.embedded()


def load_policy(name: str | None) -> PromotionPolicy:
    """Load the named promotion policy, or the default policy."""
    return PromotionPolicy.load(name) if name else PromotionPolicy()


def load_contract(name: str | None) -> DataContract | None:
    """Load the named data contract, or None (the flow then uses the model's stored contract)."""
    return DataContract.load(name) if name else None


def model_cache_dir(mlflow_server: MlflowServer) -> str:
    """Folder for local copies of registered models, one per registry (versions of two registries never mix)."""
    key = hashlib.sha256((mlflow_server.registry_uri or mlflow_server.tracking_uri).encode()).hexdigest()[:12]
    return str(state_dir() / "cache" / "registry" / key)


def contract_file(model_name: str) -> Path:
    """Where the embedded set-up keeps a model's inferred data contract."""
    return state_dir() / "contracts" / f"{model_name}.json"


def load_monitoring_policy(name: str | None):  # noqa: ANN201 - MonitoringPolicy, imported lazily
    """Load the named monitoring policy, or the default policy."""
    from blocks.monitoring_policy import MonitoringPolicy

    return MonitoringPolicy.load(name) if name else MonitoringPolicy()


def inference_log_dir(log_dir: str | None, serving_block: str | None) -> str | None:
    """Return the inference log folder: ``log_dir``, else the serving block's, else None (the default)."""
    if log_dir:
        return log_dir
    if serving_block:
        from blocks.bentoml_serving import BentoMLServing

        return str(BentoMLServing.load(serving_block).log_path())
    return None
