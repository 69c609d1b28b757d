"""The container recipe of a bento (Dockerfile), written without a Docker engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.bentoml_container import write_container_recipe

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import serving_block_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]


def test_container_recipe_is_written_without_docker(bentos: dict[str, Any], session_home: Path) -> None:
    block = serving_block_for(session_home, "serving-tests-recipe")
    recipe = write_container_recipe.fn(block, bentos["1"])
    text = Path(recipe.dockerfile).read_text()
    assert "FROM " in text and "bentoml" in text.lower()
    if recipe.image is None:
        assert "No Docker engine" in recipe.message and "bentoml containerize" in recipe.message
