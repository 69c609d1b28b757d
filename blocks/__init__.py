"""Prefect blocks of prefect-mlops: where things live and the policies that apply.

``prefect block register -m blocks`` registers every block below.
"""

from blocks.bentoml_serving import BentoMLServing
from blocks.data_contract import ColumnSpec, DataContract
from blocks.dvc_repository import DvcRepository
from blocks.mlflow_server import MlflowServer
from blocks.monitoring_policy import MonitoringPolicy
from blocks.promotion_policy import PromotionPolicy
from blocks.rollout_policy import RolloutPolicy

__all__ = [
    "BentoMLServing",
    "ColumnSpec",
    "DataContract",
    "DvcRepository",
    "MlflowServer",
    "MonitoringPolicy",
    "PromotionPolicy",
    "RolloutPolicy",
]
