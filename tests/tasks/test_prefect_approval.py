"""Human approval against the real Prefect server: a paused flow run answered from Python, from the CLI, or not at all.

Each test runs a tiny flow that calls ``await_approval`` in a thread (with the test's Prefect
settings), waits until the server lists it as paused awaiting approval, answers it (or lets the
window close) and checks the decision the flow returns and what was recorded.
"""

from __future__ import annotations

import contextvars
import threading
import uuid
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from servers import wait_until

from deployments.cli import main
from tasks.events import MODEL_APPROVAL_REJECTED, MODEL_APPROVED, model_resource_id
from tasks.exceptions import ApprovalError
from tasks.prefect_approval import (
    ApprovalDecision,
    PendingApproval,
    answer_approval,
    await_approval,
    list_pending_approvals,
)

MODEL = "approval-probe"
REPORT = "## Gate\npassed: roc_auc 0.91 >= 0.85\n\n## Infra validation\np99 12 ms <= 50 ms"


@flow(name="approval-probe")
def approval_probe(version: str, timeout_s: float, default: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Ask for approval of ``MODEL`` v``version`` and return the decision."""
    from blocks.mlflow_server import MlflowServer

    server = MlflowServer(tracking_uri=tracking_uri, experiment_name="tests-approval") if tracking_uri else None
    decision = await_approval(MODEL, version, REPORT, timeout_s=timeout_s, default=default, mlflow_server=server,
                              poll_s=1)
    return decision.model_dump(mode="json")


ATTEMPTS: dict[str, int] = {}


# retries=2: in Prefect 3.8.8 resuming a blocking pause increments the run count (the server's
# "resuming" flag is set after the increment), so a pause uses up one retry of the flow.
@flow(name="approval-probe-retried", retries=2, retry_delay_seconds=0)
def retried_probe(version: str) -> dict[str, Any]:
    """Ask for approval, then fail the first attempt after the answer: the retry must ask again."""
    ATTEMPTS[version] = ATTEMPTS.get(version, 0) + 1
    decision = await_approval(MODEL, version, REPORT, timeout_s=600, default="reject", poll_s=1)
    if ATTEMPTS[version] == 1:
        raise RuntimeError("first attempt fails after its approval")
    return decision.model_dump(mode="json")


class FlowInThread:
    """Run :func:`approval_probe` in a thread that carries this test's Prefect settings."""

    def __init__(self, probe: Any = approval_probe, **params: Any) -> None:
        self.probe = probe
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run, params), daemon=True)
        self.thread.start()

    def _run(self, params: dict[str, Any]) -> None:
        try:
            self.result = self.probe(**params)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def decision(self, deadline_s: float = 300) -> ApprovalDecision:
        self.thread.join(deadline_s)
        assert not self.thread.is_alive(), "the approval flow did not finish"
        assert self.error is None, repr(self.error)
        return ApprovalDecision.model_validate(self.result)


def wait_pending(version: str) -> PendingApproval:
    """Wait until the server lists the probe of ``version`` as paused awaiting approval."""
    found = wait_until(lambda: [p for p in list_pending_approvals() if p.version == version], 300,
                       f"flow run of v{version} paused awaiting approval")
    assert len(found) == 1
    return found[0]


def approval_events(api: str, name: str, version: str) -> list[dict[str, Any]]:
    """The ``name`` events the server stored about ``MODEL`` v``version``."""
    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [model_resource_id(MODEL)]}}, "limit": 50}
    response = httpx.post(f"{api}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return [e for e in response.json()["events"] if e["payload"].get("version") == version]


def final_state(flow_run_id: str) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id)).state.type.value


def test_approved_from_python_returns_the_reviewer_and_a_second_answer_is_refused() -> None:
    version = uuid.uuid4().hex[:8]
    run = FlowInThread(version=version, timeout_s=600, default="reject")
    pending = wait_pending(version)
    assert (pending.model_name, pending.default) == (MODEL, "reject")
    with pytest.raises(ApprovalError, match="reviewer and a reason"):
        answer_approval(pending.flow_run_id, True, "alice", "  ")

    answer_approval(pending.flow_run_id, True, "alice", "figures are fine")

    decision = run.decision()
    assert (decision.approved, decision.reviewer, decision.reason, decision.decided_by) == (
        True, "alice", "figures are fine", "person")
    assert decision.flow_run_id == pending.flow_run_id
    assert final_state(pending.flow_run_id) == "COMPLETED"
    with pytest.raises(ApprovalError, match="not paused awaiting approval"):
        answer_approval(pending.flow_run_id, False, "bob", "too late")


def test_rejected_from_the_cli_records_who_and_why_on_the_model_version(mlflow_server, capsys) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("tests-approval") or client.get_experiment(
        client.create_experiment("tests-approval"))
    mlflow_run = client.create_run(experiment.experiment_id)
    if not client.search_registered_models(f"name = '{MODEL}'"):
        client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, f"{mlflow_run.info.artifact_uri}/model",
                                          run_id=mlflow_run.info.run_id).version
    run = FlowInThread(version=str(version), timeout_s=600, default="approve", tracking_uri=mlflow_server.url)
    pending = wait_pending(str(version))
    capsys.readouterr()
    assert main(["approvals"]) == 0
    assert f"{pending.flow_run_id}  {MODEL} v{version}" in capsys.readouterr().out

    assert main(["reject", pending.flow_run_id, "--reviewer", "bob", "--reason", "p99 too close to the limit"]) == 0

    decision = run.decision()
    assert (decision.approved, decision.reviewer, decision.reason, decision.decided_by) == (
        False, "bob", "p99 too close to the limit", "person")
    tags = client.get_model_version(MODEL, str(version)).tags
    assert {k: tags.get(k) for k in ("mlops.approval.decision", "mlops.approval.reviewer",
                                     "mlops.approval.reason", "mlops.approval.decided_by")} == {
        "mlops.approval.decision": "rejected", "mlops.approval.reviewer": "bob",
        "mlops.approval.reason": "p99 too close to the limit", "mlops.approval.decided_by": "person"}
    assert tags["mlops.approval.at"] == decision.answered_at.isoformat()
    assert main(["approve", pending.flow_run_id, "--reviewer", "carol", "--reason", "changed my mind"]) == 1
    assert "not paused awaiting approval" in capsys.readouterr().err


@pytest.mark.parametrize(("default", "event_name"), [("reject", MODEL_APPROVAL_REJECTED), ("approve", MODEL_APPROVED)])
def test_no_answer_in_time_applies_the_default_and_the_run_goes_on(prefect_server: str, default: str,
                                                                  event_name: str) -> None:
    version = uuid.uuid4().hex[:8]
    run = FlowInThread(version=version, timeout_s=5, default=default)
    decision = run.decision()
    assert (decision.approved, decision.decided_by, decision.reviewer) == (
        default == "approve", "timeout", "policy default")
    assert f"no answer within 5 s; the policy default is {default}" == decision.reason
    assert final_state(decision.flow_run_id) == "COMPLETED"  # resumed after the timeout, not failed
    assert version not in [p.version for p in list_pending_approvals()]
    event = wait_until(lambda: approval_events(prefect_server, event_name, version), 120,
                       f"the {event_name} event")[0]
    assert {k: event["payload"][k] for k in ("reviewer", "decided_by")} == {"reviewer": "policy default",
                                                                        "decided_by": "timeout"}
    with pytest.raises(ApprovalError, match="not paused awaiting approval"):
        answer_approval(decision.flow_run_id, True, "alice", "too late")


def test_a_retried_flow_run_asks_again_instead_of_reusing_the_first_answer() -> None:
    version = uuid.uuid4().hex[:8]
    run = FlowInThread(retried_probe, version=version)
    first = wait_pending(version)
    answer_approval(first.flow_run_id, True, "alice", "first attempt")
    second = wait_until(lambda: [p for p in list_pending_approvals() if p.version == version], 300,
                        "the retry paused awaiting approval")[0]
    assert second.flow_run_id == first.flow_run_id
    answer_approval(second.flow_run_id, False, "bob", "second look")
    decision = run.decision()
    assert (decision.approved, decision.reviewer, decision.reason) == (False, "bob", "second look")
    assert ATTEMPTS[version] == 2


def test_an_answer_that_cannot_be_read_is_a_rejection_with_that_reason() -> None:
    from prefect.flow_runs import resume_flow_run

    version = uuid.uuid4().hex[:8]
    run = FlowInThread(version=version, timeout_s=600, default="approve")
    pending = wait_pending(version)
    # What a form could send that the server's schema accepts but the flow cannot read: a blank reviewer.
    resume_flow_run(uuid.UUID(pending.flow_run_id), run_input={"approve": True, "reviewer": " ", "reason": "fine"})
    decision = run.decision()
    assert (decision.approved, decision.reviewer, decision.decided_by) == (False, "unknown", "person")
    assert "could not be read" in decision.reason and "blank" in decision.reason


def test_await_approval_outside_a_flow_run_is_a_clear_error() -> None:
    with pytest.raises(ApprovalError, match="must run inside a flow run"):
        await_approval(MODEL, "1", REPORT, timeout_s=5, default="reject")
