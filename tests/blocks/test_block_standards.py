"""Prefect's standard test suite for blocks, run on every block of the collection."""

from __future__ import annotations

import socket

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from blocks.bentoml_serving import BentoMLServing
from blocks.data_contract import DataContract
from blocks.dvc_repository import DvcRepository
from blocks.mlflow_server import MlflowServer
from blocks.monitoring_policy import MonitoringPolicy
from blocks.promotion_policy import PromotionPolicy
from blocks.rollout_policy import RolloutPolicy

BLOCKS = [BentoMLServing, DataContract, DvcRepository, MlflowServer, MonitoringPolicy, PromotionPolicy,
          RolloutPolicy]


def _online() -> bool:
    try:
        socket.create_connection(("github.com", 443), timeout=3).close()
    except OSError:
        return False
    return True


class TestEveryBlock(BlockStandardTestSuite):
    """Description, documentation URL, described fields, a code example with ``.load("BLOCK_NAME")``, a logo."""

    @pytest.fixture(params=BLOCKS, ids=lambda b: b.__name__)
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        return request.param

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        # Prefect's check downloads the logo: it runs where there is a network (not on the build machines).
        assert str(block._logo_url).startswith("https://")
        if not _online():
            pytest.skip("the logo download needs the network")
        super().test_has_a_valid_image(block)
