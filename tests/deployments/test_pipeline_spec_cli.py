"""`prefect-mlops spec validate | export | schema`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments.definitions import PROJECT_ROOT, definitions
from deployments.pipeline_spec_yaml import SCHEMA_PATH, validate_text

EXAMPLE = PROJECT_ROOT / "examples" / "mlops-pipeline.yaml"
pytestmark = pytest.mark.no_server


def test_cli_validate_export_and_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deployments.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: churn\ntraining:\n  seed: one\n")
    assert main(["spec", "validate", str(EXAMPLE), str(bad)]) == 1
    captured = capsys.readouterr()
    assert f"{EXAMPLE}: ok, {len(definitions())} deployments" in captured.out
    assert f"{bad}:3: training.seed: Input should be a valid integer" in captured.err
    out = tmp_path / "exported.yaml"
    assert main(["spec", "export", "--out", str(out), "--param", "mlflow_block=prod-mlflow"]) == 0
    exported = validate_text(out.read_text())
    assert exported.blocks.mlflow == "prod-mlflow"
    assert (out.parent / out.read_text().splitlines()[0].split("=", 1)[1]).resolve() == SCHEMA_PATH
    capsys.readouterr()
    assert main(["spec", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "prefect-mlops pipeline spec"
