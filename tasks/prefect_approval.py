"""Human approval before production: pause the flow run with a typed Prefect form, read the answer, record it.

The rollout flow calls :func:`await_approval` between infrastructure validation and production.
It publishes the reports the reviewer needs as a Prefect artifact, then blocks with
``pause_flow_run(wait_for_input=ApprovalInput)``: the Prefect UI shows the run as Paused with a
form (approve, reviewer, reason) under the gate and infra-validation markdown. Anyone can answer
it from the UI, from Python (:func:`answer_approval`) or from the CLI (``prefect-mlops approve`` /
``reject``); :func:`list_pending_approvals` lists the runs waiting.

Pause, not suspend: a paused run keeps its process, so an ad-hoc run (no deployment) can wait too.
When nobody answers in time, Prefect raises ``FlowPauseTimeout`` and leaves the run Paused on the
server (``HandleResumingPausedFlows`` then fails any resume as "paused and never resumed"); here the
timeout is a result: the run is moved back to Running and the policy's default applies, recorded as
``decided_by="timeout"``. A run cancelled while paused is not resumed. Fails closed: an answer that
cannot be read is a rejection whose reason says so. Every decision goes to ``mlops.approval.*`` version
tags (with an MLflow server), a Prefect event (``tasks/events.py``), a log line and an artifact.

Prefect 3.8.8: resuming a blocking pause increments the flow run's run count, so each pause uses up
one of the flow's ``retries``; each attempt asks anew (the pause key carries the run count).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid
from typing import TYPE_CHECKING, Any, Literal

from prefect.input import RunInput
from pydantic import BaseModel, Field, field_validator

from tasks.events import MODEL_APPROVAL_REJECTED, MODEL_APPROVED, emit_model_event
from tasks.exceptions import ApprovalError
from tasks.logs import run_logger
from tasks.prefect_artifacts import publish_report

if TYPE_CHECKING:
    from blocks.mlflow_server import MlflowServer

#: Prefix of the flow-run input that describes a pending approval (model, version, deadline, default).
REQUEST_KEY_PREFIX = "mlops-approval-request-"
#: Prefix of every MLflow model-version tag written here.
TAG_PREFIX = "mlops.approval."


class ApprovalInput(RunInput):
    """The form a reviewer fills in to let a model version into production (shown by the Prefect UI).

    Examples:
        >>> ApprovalInput(approve=False, reviewer="bob", reason="p99 too close to the limit").approve
        False
    """

    approve: bool = Field(default=False, description="Tick to promote this version to production; leave it "
                                                     "unticked to reject it.")
    reviewer: str = Field(..., min_length=1, description="Who decides (name or e-mail); recorded on the model "
                                                         "version.")
    reason: str = Field(..., min_length=1, description="Why: recorded with the decision on the model version and in "
                                                       "the event.")

    @field_validator("reviewer", "reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        # Not in the JSON schema: the server accepts "  ", the flow reads it as unreadable and rejects.
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class ApprovalDecision(BaseModel):
    """The outcome of an approval step: what was decided, by whom, why and when.

    Examples:
        >>> ApprovalDecision(model_name="m", version="3", approved=False, reviewer="bob", reason="no",
        ...                  decided_by="person", answered_at=dt.datetime(2026, 12, 4)).render()
        'm v3: rejected by bob (person): no'
    """

    model_name: str = Field(description="Registered model name.")
    version: str = Field(description="The model version the decision is about.")
    approved: bool = Field(description="True: the version may go to production.")
    reviewer: str = Field(description="Who decided; 'policy default' on a timeout, 'unknown' if unreadable.")
    reason: str = Field(description="Why; never empty.")
    decided_by: Literal["person", "timeout"] = Field(description="A person's answer, or the policy default.")
    answered_at: dt.datetime = Field(description="When the answer reached the server (UTC).")
    flow_run_id: str | None = Field(default=None, description="The flow run that asked.")

    def render(self) -> str:
        """One line for logs and CLIs."""
        verdict = "approved" if self.approved else "rejected"
        return f"{self.model_name} v{self.version}: {verdict} by {self.reviewer} ({self.decided_by}): {self.reason}"


class PendingApproval(BaseModel):
    """A flow run paused until someone approves or rejects a model version.

    Examples:
        >>> PendingApproval(flow_run_id="1", flow_run_name="r", model_name="m", version="2",
        ...                 expires_at=None, default="reject").version
        '2'
    """

    flow_run_id: str
    flow_run_name: str
    model_name: str
    version: str
    expires_at: dt.datetime | None = Field(description="When the policy default applies.")
    default: Literal["approve", "reject"]


def pause_key(model_name: str, version: str, attempt: int = 1) -> str:
    """Return the pause key of an approval: letters, digits and dashes (Prefect's rule for input keys).

    Each attempt of a flow run (``flow_run.run_count``) asks anew: a retried rollout does not reuse an
    answer given to an earlier attempt, nor a pause that timed out.

    Examples:
        >>> pause_key("churn.clf", "3", attempt=2)[:21], pause_key("churn.clf", "3", attempt=2)[-2:]
        ('approval-churn-clf-3-', '-2')
    """
    slug = "".join(c if c.isalnum() else "-" for c in f"{model_name}-{version}".lower())[:60]
    digest = hashlib.sha256(f"{model_name}\0{version}".encode()).hexdigest()[:8]
    return f"approval-{slug}-{digest}-{attempt}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _form_markdown(model_name: str, version: str, report_markdown: str, flow_run_id: str, timeout_s: float,
                   default: str) -> str:
    return (f"# Approve {model_name} v{version} for production?\n\n"
            f"No answer within {timeout_s:.0f} s applies the policy default: **{default}**.\n"
            f"From a shell: `prefect-mlops approve {flow_run_id} --reviewer NAME --reason \"...\"` "
            f"(or `reject`).\n\n{report_markdown}")


def _ensure_running(flow_run_id: uuid.UUID) -> None:
    """Move a run left Paused (or failed as "never resumed") by a pause timeout back to Running.

    Raises:
        ApprovalError: The run was cancelled, or is in a state no approval leads to.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
        if state is None or state.is_running():
            return
        timed_out = state.is_failed() and "never resumed" in (state.message or "")
        if not (state.is_paused() or timed_out):
            raise ApprovalError(f"Flow run {flow_run_id} became {state.name} while awaiting approval; nothing is "
                                "promoted. Start the rollout again to ask for a new decision.")
        client.set_flow_run_state(flow_run_id, Running(message="Approval timed out: the policy default applies"),
                                  force=True)


def _read_run(flow_run_id: uuid.UUID) -> Any:
    """Return the flow run as the server has it: its run count (attempt) and state (when it was resumed)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def _ask(key: str, form: type[ApprovalInput], timeout_s: float,
         poll_s: float) -> tuple[ApprovalInput | None, str | None]:
    """Pause until answered: (the answer, None), (None, None) on a timeout, (None, why) if unreadable."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    try:
        answer = pause_flow_run(wait_for_input=form, timeout=max(1, math.ceil(timeout_s)), poll_interval=poll_s,
                                key=key, _sync=True)
    except FlowPauseTimeout:
        return None, None
    except Exception as exc:  # noqa: BLE001 - fail closed: any unreadable answer is a rejection with its reason
        return None, f"the answer could not be read ({type(exc).__name__}: {str(exc)[:300]})"
    if not isinstance(answer, ApprovalInput):
        return None, f"the answer could not be read (got {type(answer).__name__})"
    return answer, None


def await_approval(model_name: str, version: str, report_markdown: str, timeout_s: float,
                   default: Literal["approve", "reject"], mlflow_server: MlflowServer | None = None,
                   poll_s: float = 2.0) -> ApprovalDecision:
    """Pause the current flow run until a person approves or rejects a model version; apply ``default`` on timeout.

    Call it from a flow (not a task). It publishes ``report_markdown`` (the gate and infra-validation
    reports) as an artifact and as the form's description, pauses with the :class:`ApprovalInput` form,
    and records the decision: ``mlops.approval.*`` tags on the version (with ``mlflow_server``), a
    ``mlops.model.approved`` / ``mlops.model.approval_rejected`` event, a log line and an artifact.

    Args:
        model_name: Registered model name.
        version: The version waiting for production.
        report_markdown: What the reviewer reads (gate verdict, infra-validation figures), markdown.
        timeout_s: Seconds to wait for an answer (whole seconds; at least 1).
        default: The decision when nobody answers in time (``RolloutPolicy.approval_default``).
        mlflow_server: Where to tag the version; None records no tags.
        poll_s: Seconds between checks for an answer.

    Returns:
        The decision; ``approved`` is False for a rejection, an unreadable answer or a ``reject`` default.

    Raises:
        ApprovalError: Called outside a flow run, bad arguments, or the run was cancelled while waiting.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def rollout(version: str) -> bool:
        ...     decision = await_approval("churn-classifier", version, "## Gate: passed", timeout_s=3600,
        ...                               default="reject")
        ...     return decision.approved
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise ApprovalError(f"await_approval({model_name!r}, {version!r}) must run inside a flow run (it pauses "
                            "that run); call it from the rollout flow, not from a task or plain Python.")
    if default not in ("approve", "reject"):
        raise ApprovalError(f"approval default must be 'approve' or 'reject', not {default!r}")
    if not timeout_s > 0:
        raise ApprovalError(f"approval timeout must be positive, got {timeout_s!r} s")
    run_id = context.flow_run.id
    key = pause_key(model_name, version, max(1, _read_run(run_id).run_count or 1))
    markdown = _form_markdown(model_name, version, report_markdown, str(run_id), timeout_s, default)
    publish_report(f"{model_name}-v{version}-approval", markdown, description=f"approval of {model_name} v{version}")
    _record_request(model_name, version, key, run_id, timeout_s, default)
    run_logger().info("Awaiting approval of %s v%s for up to %.0f s (default: %s); answer with `prefect-mlops "
                      "approve|reject %s`", model_name, version, timeout_s, default, run_id)
    answer, unreadable = _ask(key, ApprovalInput.with_initial_data(description=markdown), timeout_s, poll_s)
    _ensure_running(run_id)
    common = {"model_name": model_name, "version": version, "flow_run_id": str(run_id)}
    if answer is not None:
        resumed = _read_run(run_id).state
        decision = ApprovalDecision(approved=answer.approve, reviewer=answer.reviewer, reason=answer.reason,
                                    decided_by="person", answered_at=resumed.timestamp if resumed else _now(),
                                    **common)
    elif unreadable is not None:
        decision = ApprovalDecision(approved=False, reviewer="unknown", reason=unreadable, decided_by="person",
                                    answered_at=_now(), **common)
    else:
        decision = ApprovalDecision(approved=default == "approve", reviewer="policy default",
                                    reason=f"no answer within {timeout_s:.0f} s; the policy default is {default}",
                                    decided_by="timeout", answered_at=_now(), **common)
    record_decision(decision, mlflow_server)
    return decision


def _record_request(model_name: str, version: str, key: str, flow_run_id: uuid.UUID, timeout_s: float,
                    default: str) -> None:
    """Store what the run waits for as a flow-run input, so that ``prefect-mlops approvals`` can list it."""
    from prefect.input.actions import create_flow_run_input, read_flow_run_input

    if read_flow_run_input(REQUEST_KEY_PREFIX + key, flow_run_id=flow_run_id) is not None:
        return  # asked already in this attempt
    expires = _now() + dt.timedelta(seconds=max(1, math.ceil(timeout_s)))
    create_flow_run_input(REQUEST_KEY_PREFIX + key, {"model_name": model_name, "version": version,
                                                     "default": default, "expires_at": expires.isoformat()},
                          flow_run_id=flow_run_id)


def record_decision(decision: ApprovalDecision, mlflow_server: MlflowServer | None = None) -> None:
    """Record an approval decision: version tags, a Prefect event, a log line and an artifact.

    Args:
        decision: What :func:`await_approval` decided.
        mlflow_server: Where to tag the version; None skips the tags.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def note() -> None:
        ...     record_decision(ApprovalDecision(model_name="m", version="1", approved=True, reviewer="alice",
        ...                                      reason="figures fine", decided_by="person",
        ...                                      answered_at=dt.datetime.now(dt.UTC)))
    """
    from tasks.mlflow_registry import tag_model_version

    at = decision.answered_at.isoformat()
    run_logger().info("Approval: %s", decision.render())
    if mlflow_server is not None:
        tags = {"decision": "approved" if decision.approved else "rejected", "reviewer": decision.reviewer,
                "reason": decision.reason, "at": at, "decided_by": decision.decided_by,
                "flow_run_id": decision.flow_run_id or ""}
        tag_model_version(mlflow_server, decision.model_name, decision.version,
                          {TAG_PREFIX + key: value for key, value in tags.items()})
    payload: dict[str, Any] = {"version": decision.version, "reviewer": decision.reviewer, "reason": decision.reason,
                               "decided_by": decision.decided_by, "answered_at": at}
    emit_model_event(MODEL_APPROVED if decision.approved else MODEL_APPROVAL_REJECTED, decision.model_name, payload,
                     key=f"{decision.version}-{at}")
    publish_report(f"{decision.model_name}-v{decision.version}-approval-decision",
                   f"# {decision.render()}\n\nat {at}", description="approval decision")


def _pending_request(flow_run: Any) -> dict[str, Any] | None:
    """Return the approval request of a paused run (its current pause), or None when it waits for another."""
    from prefect.input.actions import read_flow_run_input

    state = flow_run.state
    if state is None or not state.is_paused() or not state.state_details.pause_key:
        return None
    request = read_flow_run_input(REQUEST_KEY_PREFIX + state.state_details.pause_key, flow_run_id=flow_run.id)
    return request if isinstance(request, dict) else None


def answer_approval(flow_run_id: str, approve: bool, reviewer: str, reason: str) -> None:
    """Answer a flow run paused by :func:`await_approval`: approve or reject, saying who and why.

    Args:
        flow_run_id: The paused flow run (``prefect-mlops approvals`` lists them).
        approve: True promotes the version; False rejects it.
        reviewer: Who decides; recorded on the version.
        reason: Why; recorded on the version and in the event.

    Raises:
        ApprovalError: Empty reviewer or reason, no such run, the run is not paused awaiting an
            approval, its window closed (the policy default applied), or the server refused the answer.

    Examples:
        >>> answer_approval("0d6c9c3e-0000-0000-0000-000000000000", True, "alice", "figures fine")  # doctest: +SKIP
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    answer = {"approve": bool(approve), "reviewer": (reviewer or "").strip(), "reason": (reason or "").strip()}
    if not answer["reviewer"] or not answer["reason"]:
        raise ApprovalError("an approval answer needs a reviewer and a reason (both are recorded on the version)")
    try:
        run_uuid = uuid.UUID(str(flow_run_id))
    except ValueError as exc:
        raise ApprovalError(f"{flow_run_id!r} is not a flow run id; `prefect-mlops approvals` lists them") from exc
    with get_client(sync_client=True) as client:
        try:
            flow_run = client.read_flow_run(run_uuid)
        except ObjectNotFound as exc:
            raise ApprovalError(f"no flow run {flow_run_id} on {client.api_url}; `prefect-mlops approvals` lists "
                                "the runs awaiting approval") from exc
        request = _pending_request(flow_run)
    if request is None:
        state = flow_run.state.name if flow_run.state else "no state"
        raise ApprovalError(f"flow run {flow_run_id} ({flow_run.name}) is not paused awaiting approval (state: "
                            f"{state}); `prefect-mlops approvals` lists the runs that are")
    what = f"{request.get('model_name')} v{request.get('version')} (flow run {flow_run_id})"
    try:
        resume_flow_run(run_uuid, run_input=answer)
    except NotPausedError as exc:
        raise ApprovalError(f"{what} is no longer paused: someone answered first, or it was cancelled") from exc
    except FlowPauseTimeout as exc:
        raise ApprovalError(f"the approval window of {what} closed at {request.get('expires_at')}; the policy "
                            f"default ({request.get('default')}) applies") from exc
    except RuntimeError as exc:
        raise ApprovalError(f"the server refused the answer for {what}: {exc}") from exc
    run_logger().info("Answered %s: %s by %s: %s", what, "approve" if approve else "reject", answer["reviewer"],
                      answer["reason"])


def list_pending_approvals(limit: int = 200) -> list[PendingApproval]:
    """List the flow runs paused by :func:`await_approval`, oldest first.

    Args:
        limit: Most paused flow runs to look at.

    Returns:
        One entry per run awaiting a decision, with the model version and when the default applies.

    Examples:
        >>> [p.flow_run_id for p in list_pending_approvals()]  # doctest: +SKIP
        ['0d6c9c3e-...']
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    pending = []
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=paused, sort=FlowRunSort.START_TIME_ASC, limit=limit):
            request = _pending_request(run)
            if request is None:
                continue
            expires = request.get("expires_at")
            pending.append(PendingApproval(
                flow_run_id=str(run.id), flow_run_name=run.name, model_name=str(request.get("model_name")),
                version=str(request.get("version")), default=request.get("default", "reject"),
                expires_at=dt.datetime.fromisoformat(expires) if expires else None))
    return pending
