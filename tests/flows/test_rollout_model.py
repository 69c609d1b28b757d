"""The rollout-model flow against real servers: staging -> infra validation -> production, or stop on staging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from blocks.rollout_policy import RolloutPolicy
from flows.rollout_model import TAG_ROLLOUT_STAGE, rollout_model
from tasks.events import INFRA_VALIDATION_FAILED, model_resource_id
from tasks.exceptions import InfraValidationError
from tasks.infra_validation import TAG_VALIDATION, TAG_VALIDATION_REASON
from tasks.mlflow_alias_history import alias_history, set_model_alias
from tasks.serving_endpoint import serving_status, stop_serving

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import latest_artifact, serving_block_for, wait_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]

STAGING = "rollout-tests-staging"
PRODUCTION = "rollout-tests-production"
POLICY = "rollout-tests-policy"
IMPOSSIBLE = "rollout-tests-impossible"


@pytest.fixture(scope="module")
def endpoints(session_home: Path, serving_registry: Any) -> Any:
    """A staging and a production endpoint (own ports, the session's store); both stopped after the module."""
    staging = serving_block_for(session_home, STAGING)
    production = serving_block_for(session_home, PRODUCTION)
    RolloutPolicy(duration_s=2.0, warmup_s=0.3, concurrency=4).save(POLICY, overwrite=True)
    RolloutPolicy(duration_s=1.0, warmup_s=0.0, concurrency=2, min_rps=1e9).save(IMPOSSIBLE, overwrite=True)
    yield staging, production
    stop_serving(staging)
    stop_serving(production)


def rollout(serving_registry: Any, policy: str) -> Any:
    return rollout_model(model_name=serving_registry.model, mlflow_block=serving_registry.mlflow_block,
                         staging_block=STAGING, production_block=PRODUCTION, policy=policy)


def answered_version(url: str, serving_registry: Any) -> str:
    features = json.loads(serving_registry.v1.tags["mlops.features"])
    record = pd.read_parquet(serving_registry.sample_file)[features].head(1).to_dict("records")[0]
    response = httpx.post(f"{url}/predict", json=record, timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


@pytest.fixture(scope="module")
def rolled_out(endpoints: Any, serving_registry: Any) -> Any:
    """Version 1, the champion, rolled out with a policy it meets."""
    set_model_alias.fn(serving_registry.server(), serving_registry.model, "champion", "1", "rollout test: v1")
    return rollout(serving_registry, POLICY)


def test_a_good_version_goes_staging_validated_production(rolled_out: Any, endpoints: Any,
                                                          serving_registry: Any) -> None:
    staging, production = endpoints
    print(f"rollout: {rolled_out.infra_validation}")
    assert rolled_out.model_version == "1" and rolled_out.production_status == "deployed"
    assert rolled_out.production_url == production.endpoint_url()
    assert rolled_out.staging_url == staging.endpoint_url() != rolled_out.production_url
    assert rolled_out.infra_validation.startswith("v1 passed infra validation: ")
    assert answered_version(production.endpoint_url(), serving_registry) == "1"
    assert serving_status(staging)["model_version"] == "1"
    tags = serving_registry.server().get_client().get_model_version(serving_registry.model, "1").tags
    assert tags[TAG_VALIDATION] == "passed" and tags[TAG_ROLLOUT_STAGE] == "production"
    assert float(tags["mlops.infra.rps"]) > 0 and float(tags["mlops.infra.p99_ms"]) > 0
    assert float(tags["mlops.infra.memory_mb"]) > 50 and tags["mlops.infra.errors"] == "0"
    assert rolled_out.figures["rps"] == pytest.approx(float(tags["mlops.infra.rps"]), rel=1e-3)
    assert "v1 passed infra validation" in (latest_artifact(f"{serving_registry.model}-infra-validation-summary")
                                            or "")
    assert "v1 rolled out" in (latest_artifact(f"{serving_registry.model}-rollout-summary") or "")


def test_a_version_failing_infra_validation_stays_out_of_production(
        rolled_out: Any, endpoints: Any, serving_registry: Any, prefect_server: str) -> None:
    staging, production = endpoints
    server = serving_registry.server()
    set_model_alias.fn(server, serving_registry.model, "champion", "2", "rollout test: v2 promoted")
    with pytest.raises(InfraValidationError, match="min_rps") as failure:
        rollout(serving_registry, IMPOSSIBLE)
    assert "not deployed to production: v1 keeps serving" in str(failure.value)
    assert answered_version(production.endpoint_url(), serving_registry) == "1"  # production never changed
    assert serving_status(production)["model_version"] == "1"
    assert serving_status(staging)["model_version"] == "2"  # it got as far as staging
    client = server.get_client()
    tags = client.get_model_version(serving_registry.model, "2").tags
    assert tags[TAG_VALIDATION] == "failed" and "below min_rps 1e+09" in tags[TAG_VALIDATION_REASON]
    assert tags[TAG_ROLLOUT_STAGE] == "rejected on staging" and float(tags["mlops.infra.rps"]) > 0
    assert str(client.get_model_version_by_alias(serving_registry.model, "champion").version) == "1"
    last = alias_history(server, serving_registry.model, "champion")[-1]
    assert (last.from_version, last.to_version) == ("2", "1") and "infra validation" in last.reason
    assert "v2 failed infra validation" in (latest_artifact(f"{serving_registry.model}-infra-validation-summary")
                                            or "")
    assert "stays out of production" in (latest_artifact(f"{serving_registry.model}-rollout-summary") or "")

    def failed_event() -> dict | None:
        body = {"filter": {"event": {"name": [INFRA_VALIDATION_FAILED]},
                           "resource": {"id": [model_resource_id(serving_registry.model)]}}, "limit": 20}
        events = httpx.post(f"{prefect_server}/events/filter", json=body, timeout=10).json()["events"]
        return next((e for e in events if e["payload"].get("version") == "2"), None)

    event = wait_for(failed_event, 60, "the infra-validation-failed event")
    assert "min_rps" in event["payload"]["reason"] and event["payload"]["figures"]["rps"] > 0
    assert (event["payload"]["serving_version"], event["payload"]["alias_restored_to"]) == ("1", "1")


def test_a_version_that_fails_on_staging_moves_the_alias_back_to_what_production_serves(
        rolled_out: Any, endpoints: Any, serving_registry: Any, broken_version: Any) -> None:
    staging, production = endpoints
    staged_before = serving_status(staging)["model_version"]
    server = serving_registry.server()
    set_model_alias.fn(server, serving_registry.model, "champion", broken_version.version, "rollout test: broken")
    with pytest.raises(InfraValidationError, match="staging deployment failed") as failure:
        rollout(serving_registry, POLICY)
    assert "broken on purpose" in str(failure.value) and "v1 keeps serving" in str(failure.value)
    assert answered_version(production.endpoint_url(), serving_registry) == "1"
    assert serving_status(staging)["model_version"] == staged_before  # staging's previous version still serves there
    client = server.get_client()
    # Back to what production serves (v1), not to what staging served before (deploy-model's own restore would).
    assert str(client.get_model_version_by_alias(serving_registry.model, "champion").version) == "1"
    tags = client.get_model_version(serving_registry.model, broken_version.version).tags
    assert tags[TAG_VALIDATION] == "failed" and "staging deployment failed" in tags[TAG_VALIDATION_REASON]
    assert tags["mlops.infra.rps"] == "not measured" and tags[TAG_ROLLOUT_STAGE] == "rejected on staging"


def _in_thread(call: Any) -> Any:
    """Run ``call`` in a thread carrying this test's Prefect settings; return a function that joins it."""
    import contextvars
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(300)
        assert not thread.is_alive() and "error" not in box, box.get("error")
        return box["result"]

    return join


def test_approval_rejected_keeps_production_and_approved_rolls_out(
        rolled_out: Any, endpoints: Any, serving_registry: Any) -> None:
    from deployments.cli import main
    from tasks.prefect_approval import answer_approval, list_pending_approvals

    staging, production = endpoints
    server = serving_registry.server()
    RolloutPolicy(duration_s=1.0, warmup_s=0.0, concurrency=2, require_approval=True, approval_timeout_s=600,
                  approval_default="reject").save("rollout-tests-approval", overwrite=True)

    def pending() -> Any:
        found = [p for p in list_pending_approvals() if p.model_name == serving_registry.model and p.version == "2"]
        return found[0] if found else None

    # Rejected from the CLI: production keeps v1, the alias moves back, who and why are on the version.
    set_model_alias.fn(server, serving_registry.model, "champion", "2", "rollout test: v2 for approval")
    join = _in_thread(lambda: rollout(serving_registry, "rollout-tests-approval"))
    paused = wait_for(pending, 300, "the rollout of v2 paused awaiting approval", interval=1.0)
    assert main(["reject", paused.flow_run_id, "--reviewer", "carol", "--reason", "p99 too close to the limit"]) == 0
    rejected = join()
    assert rejected.production_status == "rejected" and "rejected by carol" in (rejected.approval or "")
    assert answered_version(production.endpoint_url(), serving_registry) == "1"
    client = server.get_client()
    assert str(client.get_model_version_by_alias(serving_registry.model, "champion").version) == "1"
    tags = client.get_model_version(serving_registry.model, "2").tags
    assert (tags["mlops.approval.decision"], tags["mlops.approval.reviewer"]) == ("rejected", "carol")
    assert tags[TAG_ROLLOUT_STAGE] == "rejected by approval"
    assert "stays out of production" in (latest_artifact(f"{serving_registry.model}-rollout-summary") or "")

    # Approved from Python: the same version goes on to production.
    set_model_alias.fn(server, serving_registry.model, "champion", "2", "rollout test: v2 again")
    join = _in_thread(lambda: rollout(serving_registry, "rollout-tests-approval"))
    paused = wait_for(pending, 300, "the second rollout of v2 paused awaiting approval", interval=1.0)
    answer_approval(paused.flow_run_id, True, "dave", "checked the figures")
    approved = join()
    assert approved.production_status == "deployed" and "approved by dave" in (approved.approval or "")
    assert answered_version(production.endpoint_url(), serving_registry) == "2"
    assert client.get_model_version(serving_registry.model, "2").tags["mlops.approval.decision"] == "approved"
