"""The standby backend: started by the training flow's pre-build, adopted by deploy-model, never orphaned.

Real processes throughout: ``bentoml serve`` standbys started by ``prebuild_bento`` (as the training
flow calls it after a promotion), faults injected for real (SIGKILL of a standby's leader, a standby
record pointing at a backend of another version), and every wait a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow

from flows.deploy_model import prebuild_bento
from tasks.serving_endpoint import endpoint_id, read_state, serving_status, stop_serving, write_state
from tasks.serving_processes import ENDPOINT_ENV, group_members, marked_processes
from tasks.system import process_alive

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import serving_block_for, wait_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]

BLOCK = "serving-tests-standby"


@flow(name="test-prebuild-standby")
def prebuild(mlflow_block: str, serving_block: str, model: str, version: str, ttl_s: float = 600.0) -> str | None:
    """What the training flow runs after promoting ``version`` (its bento, and the standby backend)."""
    from flows.common import load_mlflow

    return prebuild_bento(load_mlflow(mlflow_block), serving_block, model, version, standby_ttl_s=ttl_s)


@pytest.fixture(scope="module")
def block(session_home: Path, serving_registry: Any) -> Any:
    """Version 1 serving on its own supervised endpoint; every process stopped after the module."""
    from flows.deploy_model import deploy_model

    serving = serving_block_for(session_home, BLOCK, supervise_interval_s=0.5)
    try:
        deploy_model(model_name=serving_registry.model, version="1", alias=None,
                     mlflow_block=serving_registry.mlflow_block, serving_block=BLOCK)
        yield serving
    finally:
        stop_serving(serving)
    assert not marked_processes(ENDPOINT_ENV, endpoint_id(serving))


def start_standby_of(serving_registry: Any, block: Any, version: str, ttl_s: float = 600.0) -> dict[str, Any]:
    """Pre-build ``version`` as the training flow does; return the standby recorded in the endpoint state."""
    tag = prebuild(serving_registry.mlflow_block, BLOCK, serving_registry.model, version, ttl_s)
    record = read_state(block).get("standby") or {}
    assert tag and record.get("bento_tag") == tag and record.get("model_version") == version, record
    assert serving_status(block)["standby"]["alive"]
    return record


def deploy(serving_registry: Any, version: str) -> tuple[Any, set[str]]:
    """Deploy ``version``; return its summary and the names of the task runs it ran (without the suffix)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.deploy_model import deploy_model

    state = deploy_model(model_name=serving_registry.model, version=version, alias=None,
                         mlflow_block=serving_registry.mlflow_block, serving_block=BLOCK, return_state=True)
    summary = state.result()
    run_id = state.state_details.flow_run_id

    def task_names() -> set[str] | None:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        names = {r.name.rsplit("-", 1)[0] for r in runs}
        return names if {"switch-live-backend", "verify-live-endpoint"} <= names else None

    return summary, wait_for(task_names, 60, "the deployment's task runs in the API")


def answers(block: Any, serving_registry: Any) -> str:
    """The model version the stable URL answers a prediction with."""
    record = serving_registry_record(serving_registry)
    response = httpx.post(f"{block.endpoint_url()}/predict", json=record, timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def serving_registry_record(serving_registry: Any) -> dict[str, Any]:
    import pandas as pd

    features = json.loads(serving_registry.v1.tags["mlops.features"])
    return pd.read_parquet(serving_registry.sample_file)[features].head(1).to_dict("records")[0]


def test_deploy_adopts_the_standby_and_still_smoke_tests_swaps_and_verifies(block: Any,
                                                                            serving_registry: Any) -> None:
    old = serving_status(block)["backend"]
    standby = start_standby_of(serving_registry, block, "2")
    summary, tasks = deploy(serving_registry, "2")
    assert summary.status == "deployed" and summary.model_version == "2" and summary.standby == "adopted"
    assert summary.backend_pid == standby["pid"] and "standby adopted" in summary.render()
    assert {"adopt-standby-backend", "smoke-test-server", "switch-live-backend", "verify-live-endpoint"} <= tasks
    assert "start-bento-server" not in tasks
    assert answers(block, serving_registry) == "2"
    status = serving_status(block)
    assert status["state"] == "serving" and status["backend"]["pid"] == standby["pid"] and "standby" not in status
    state = read_state(block)
    assert state["live"]["standby"] is True and state.get("standby") is None
    wait_for(lambda: not process_alive(old["pid"]), 30, "the replaced backend to be stopped")


def test_a_standby_that_fails_readiness_is_discarded_and_the_deploy_starts_its_own(
        block: Any, serving_registry: Any, tmp_path: Path) -> None:
    standby = start_standby_of(serving_registry, block, "1")
    # Its status file now reports that the model failed to load (what a backend writes when it does).
    failed = tmp_path / "failed.status.json"
    failed.write_text(json.dumps({"state": "failed", "error": "injected: the model failed to load"}))
    state = read_state(block)
    state["standby"] = {**standby, "status_file": str(failed)}
    write_state(block, state)
    summary, tasks = deploy(serving_registry, "1")
    assert summary.status == "deployed" and summary.model_version == "1"
    assert summary.standby and summary.standby.startswith("discarded: not ready"), summary.standby
    assert "injected: the model failed to load" in summary.standby
    assert summary.backend_pid != standby["pid"] and {"start-bento-server", "smoke-test-server"} <= tasks
    assert answers(block, serving_registry) == "1"
    wait_for(lambda: not group_members(standby["group"]) or None, 30, "every process of the standby to stop")
    assert read_state(block).get("standby") is None and read_state(block)["live"]["standby"] is False


def test_a_standby_that_fails_the_smoke_request_is_discarded(block: Any, serving_registry: Any) -> None:
    live = read_state(block)["live"]
    standby = start_standby_of(serving_registry, block, "2")
    # The record now points at a ready backend of version 1: ready, but the smoke request gets the wrong model.
    with_state = read_state(block)
    with_state["standby"] = {**standby, "url": live["url"], "status_file": live["status_file"]}
    write_state(block, with_state)
    summary, tasks = deploy(serving_registry, "2")
    assert summary.status == "deployed" and summary.model_version == "2"
    assert summary.standby and summary.standby.startswith("discarded: smoke request failed"), summary.standby
    assert summary.backend_pid not in (standby["pid"], live["pid"]) and "start-bento-server" in tasks
    assert answers(block, serving_registry) == "2"
    wait_for(lambda: not group_members(standby["group"]) or None, 30, "every process of the standby to stop")
    wait_for(lambda: not process_alive(live["pid"]), 30, "the replaced version 1 backend to be stopped")


def test_a_standby_whose_leader_died_is_cleared_by_the_supervisor(block: Any, serving_registry: Any) -> None:
    standby = start_standby_of(serving_registry, block, "1")
    os.kill(standby["pid"], signal.SIGKILL)
    wait_for(lambda: (read_state(block).get("standby") is None and not group_members(standby["group"])) or None,
             60, "the supervisor to stop what is left of the dead standby")
    assert serving_status(block)["model_version"] == "2"


def test_a_standby_nobody_adopts_is_stopped_when_it_expires(block: Any, serving_registry: Any) -> None:
    standby = start_standby_of(serving_registry, block, "1", ttl_s=10.0)
    wait_for(lambda: (read_state(block).get("standby") is None and not group_members(standby["group"])) or None,
             60, "the supervisor to stop the expired standby")
    status = serving_status(block)
    assert "standby" not in status and status["state"] == "serving" and status["model_version"] == "2"


def test_stop_endpoint_stops_the_standby_too(block: Any, serving_registry: Any) -> None:
    standby = start_standby_of(serving_registry, block, "1")
    stopped = stop_serving(block)
    assert any(s.startswith(f"standby {standby['bento_tag']}") for s in stopped["stopped"]), stopped
    wait_for(lambda: not group_members(standby["group"]) or None, 15, "every process of the standby to stop")
    assert not marked_processes(ENDPOINT_ENV, endpoint_id(block))
    assert read_state(block).get("standby") is None


def test_no_standby_on_an_endpoint_nobody_supervises(session_home: Path, serving_registry: Any) -> None:
    fresh = serving_block_for(session_home, "serving-tests-standby-fresh")
    tag = prebuild(serving_registry.mlflow_block, "serving-tests-standby-fresh", serving_registry.model, "2")
    assert tag  # the bento is built: the deployment reuses it
    assert read_state(fresh).get("standby") is None and "standby" not in serving_status(fresh)
    assert not marked_processes(ENDPOINT_ENV, endpoint_id(fresh))
