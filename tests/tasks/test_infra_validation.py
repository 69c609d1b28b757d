"""Infra validation: a bounded load test against a real ``bentoml serve`` backend, checked by a rollout policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blocks.rollout_policy import RolloutPolicy
from tasks.bentoml_serving import start_bento_server, stop_bento_server
from tasks.infra_validation import check_figures, infra_tags, measure_endpoint
from tasks.serving_checks import example_records
from tasks.system import free_port

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import serving_block_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]


@pytest.fixture(scope="module")
def backend(session_home: Path, bentos: dict[str, Any]) -> Any:
    """Version 1's bento served by a real ``bentoml serve`` on a free port; stopped after the module."""
    block = serving_block_for(session_home, "serving-tests-infra")
    server = start_bento_server.fn(block, bentos["1"])
    yield server
    stop_bento_server.fn(block, server, drain=False)


def test_load_test_against_bentoml_serve_measures_sane_figures(backend: Any, bentos: dict[str, Any]) -> None:
    record = example_records(bentos["1"])[0]
    figures = measure_endpoint(backend.url, record, concurrency=4, duration_s=2.0, max_requests=100_000,
                               warmup_s=0.3, memory_pids=lambda: [backend.pid])
    print(f"infra figures: {figures.model_dump()}")
    assert figures.requests > 0 and figures.errors == 0 and figures.error_rate == 0.0, figures
    assert figures.rps is not None and figures.rps > 0
    assert figures.p50_ms is not None and figures.p99_ms is not None and 0 < figures.p50_ms <= figures.p99_ms
    assert figures.memory_mb is not None and figures.memory_mb > 50  # bentoml serve + a worker with the model
    assert figures.problems == []
    verdict = check_figures(figures, RolloutPolicy())
    assert verdict.passed, verdict.reasons  # the defaults pass for this model on this machine
    assert {c["threshold"] for c in verdict.checks} == {"min_rps", "max_p99_ms", "max_error_rate", "max_memory_mb"}
    tags = infra_tags(verdict)
    assert tags["mlops.rollout.infra_validation"] == "passed" and float(tags["mlops.infra.rps"]) > 0


def test_a_threshold_that_cannot_be_met_fails_with_its_reason(backend: Any, bentos: dict[str, Any]) -> None:
    record = example_records(bentos["1"])[0]
    figures = measure_endpoint(backend.url, record, concurrency=2, duration_s=5.0, max_requests=40, warmup_s=0.0,
                               memory_pids=lambda: [backend.pid])
    assert 0 < figures.requests <= 40 and figures.errors == 0  # the request bound ends the load first
    verdict = check_figures(figures, RolloutPolicy(min_rps=1e9, max_memory_mb=1.0))
    assert not verdict.passed
    assert any(r.startswith("rps ") and "below min_rps 1e+09" in r for r in verdict.reasons), verdict.reasons
    assert any(r.startswith("memory_mb ") and "above max_memory_mb 1" in r for r in verdict.reasons), verdict.reasons
    assert infra_tags(verdict)["mlops.rollout.infra_validation"] == "failed"
    assert "min_rps" in infra_tags(verdict)["mlops.rollout.infra_validation_reason"]


def test_an_endpoint_that_does_not_answer_fails_closed() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    figures = measure_endpoint(url, {"x": 1}, concurrency=2, duration_s=0.5, max_requests=1000, warmup_s=0.0,
                               memory_pids=lambda: [None])
    assert figures.requests > 0 and figures.errors == figures.requests and figures.error_rate == 1.0
    assert figures.rps is None and figures.p99_ms is None and figures.memory_mb is None
    verdict = check_figures(figures, RolloutPolicy())
    assert not verdict.passed
    text = " | ".join(verdict.reasons)
    for missing in ("rps could not be measured", "p99_ms could not be measured", "memory_mb could not be measured"):
        assert missing in text, text
    assert "error_rate 1 is above max_error_rate 0.01" in text and "was answered 200" in text
