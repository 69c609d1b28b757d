"""Prefect events of prefect-mlops: every name and payload, in one place (the event contract).

Every event's resource is the model. Resource labels:

* ``prefect.resource.id = "mlops.model.<model name>"``: required; every trigger matches on it.
* ``prefect.resource.name = <model name>``: optional; triggers derive the name from the id without it.
* ``mlops.origin = <flow that emitted it>``: optional; ``continuous-training/on-new-data`` only
  starts on ``mlops.data.versioned`` events with ``mlops.origin = data-watch``.

Payloads are JSON objects. :data:`EVENT_PAYLOADS` lists, per event, the keys our flows always
send and those they may leave out; trigger templates render for an event with no payload at
all (every key they read has a default), so any event the contract allows starts its run.

==============================  ===========================================================
event                           payload keys
==============================  ===========================================================
``mlops.data.versioned``        ``dataset_path``, ``rev``, ``md5``, ``new_commit``, ``reference_md5``
``mlops.data.validation_failed`` ``dataset_path``, ``rev``, ``violations``
``mlops.model.promoted``        ``version``, ``previous_version``, ``run_id``, ``reasons``
``mlops.model.rejected``        ``version``, ``champion_version``, ``run_id``, ``reasons``
``mlops.model.rolled_back``     ``version``, ``previous_version``, ``reason``
``mlops.model.deployed``        ``version``, ``previous_version``, ``url``, ``bento``
``mlops.model.approved``        ``version``, ``reviewer``, ``reason``, ``decided_by``, ``answered_at``;
                                ``decided_by`` = ``person`` or ``timeout`` (the policy default applied)
``mlops.model.approval_rejected``  ``version``, ``reviewer``, ``reason``, ``decided_by``, ``answered_at``
``mlops.deployment.failed``     ``version``, ``reason``, ``serving_version``, ``alias_restored_to``
``mlops.rollout.infra_validated``  ``version``, ``url``, ``figures``; ``figures`` = {rps, p50_ms, p99_ms,
                                ``error_rate``, ``memory_mb``, requests, errors, concurrency, seconds}
``mlops.rollout.infra_validation_failed``  ``version``, ``url``, ``reason``, ``figures``, ``serving_version``,
                                ``alias_restored_to``; the version stays out of production
``mlops.monitoring.drift_detected``  ``drift_share``, ``drifted_columns``, ``window``,
                                ``report``, ``champion_version``, ``monitor_flow_run_id``,
                                ``monitor_flow_run_url``, ``report_url``; ``window`` = {start, end, rows,
                                time_basis, first_arrival}
``mlops.monitoring.performance_decayed``  ``metric``, ``value``, ``baseline``, ``window``, ``champion_version``,
                                ``monitor_flow_run_id``, ``monitor_flow_run_url``, ``report_url``
``mlops.monitoring.data_quality_failed``  ``issues``, ``window``
==============================  ===========================================================

Events are keyed: :func:`emit_model_event` gives each event a deterministic id (uuid5 of the
flow run, event, model and a key), and the Prefect server stores and evaluates an event id once
(``prefect.server.events.storage.database`` skips known ids; the trigger service skips seen
ids), so a retried task or a repeated call does not emit the event twice.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.logs import run_logger

DATA_VERSIONED = "mlops.data.versioned"
DATA_VALIDATION_FAILED = "mlops.data.validation_failed"
MODEL_PROMOTED = "mlops.model.promoted"
MODEL_REJECTED = "mlops.model.rejected"
MODEL_ROLLED_BACK = "mlops.model.rolled_back"
MODEL_DEPLOYED = "mlops.model.deployed"
MODEL_APPROVED = "mlops.model.approved"
MODEL_APPROVAL_REJECTED = "mlops.model.approval_rejected"
DEPLOYMENT_FAILED = "mlops.deployment.failed"
INFRA_VALIDATED = "mlops.rollout.infra_validated"
INFRA_VALIDATION_FAILED = "mlops.rollout.infra_validation_failed"
DRIFT_DETECTED = "mlops.monitoring.drift_detected"
PERFORMANCE_DECAYED = "mlops.monitoring.performance_decayed"
DATA_QUALITY_FAILED = "mlops.monitoring.data_quality_failed"

ALL_EVENTS = (DATA_VERSIONED, DATA_VALIDATION_FAILED, MODEL_PROMOTED, MODEL_REJECTED, MODEL_ROLLED_BACK,
              MODEL_DEPLOYED, DEPLOYMENT_FAILED, INFRA_VALIDATED, INFRA_VALIDATION_FAILED, DRIFT_DETECTED,
              PERFORMANCE_DECAYED, DATA_QUALITY_FAILED, MODEL_APPROVED, MODEL_APPROVAL_REJECTED)

#: Resource id prefix of every event; the rest of the id is the model name.
RESOURCE_PREFIX = "mlops.model."
#: Resource label naming the flow that emitted an event (``data-watch`` for ``watch-data``).
ORIGIN_LABEL = "mlops.origin"

#: Keys of drift / decay events that link back to what found the breach: the monitor flow run, its
#: Prefect UI page and the Evidently report as stored on the MLflow server (None without one).
_MONITOR_ORIGIN = ("monitor_flow_run_id", "monitor_flow_run_url", "report_url")

#: Payload keys per event: (always sent by our flows, may be absent). Triggers need none of them.
EVENT_PAYLOADS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    DATA_VERSIONED: (("dataset_path", "rev", "md5"), ("new_commit", "reference_md5")),
    DATA_VALIDATION_FAILED: (("dataset_path", "rev", "violations"), ()),
    MODEL_PROMOTED: (("version", "run_id", "reasons"), ("previous_version",)),
    MODEL_REJECTED: (("version", "run_id", "reasons"), ("champion_version",)),
    MODEL_ROLLED_BACK: (("version", "reason"), ("previous_version",)),
    MODEL_DEPLOYED: (("version", "url", "bento"), ("previous_version",)),
    DEPLOYMENT_FAILED: (("version", "reason"), ("serving_version", "alias_restored_to")),
    INFRA_VALIDATED: (("version", "url", "figures"), ()),
    INFRA_VALIDATION_FAILED: (("version", "url", "reason", "figures"), ("serving_version", "alias_restored_to")),
    DRIFT_DETECTED: (("drift_share", "drifted_columns", "window"), ("report", "champion_version", *_MONITOR_ORIGIN)),
    PERFORMANCE_DECAYED: (("metric", "value", "baseline", "window"), ("champion_version", *_MONITOR_ORIGIN)),
    DATA_QUALITY_FAILED: (("issues", "window"), ()),
    MODEL_APPROVED: (("version", "reviewer", "reason", "decided_by", "answered_at"), ()),
    MODEL_APPROVAL_REJECTED: (("version", "reviewer", "reason", "decided_by", "answered_at"), ()),
}

#: Namespace of the deterministic event ids.
EVENT_ID_NAMESPACE = uuid.UUID("5b0c6f0e-4a51-4b8e-9d0a-6d6c6f70736d")


def model_resource_id(model_name: str) -> str:
    """Return the event resource id naming a model."""
    return f"{RESOURCE_PREFIX}{model_name}"


def keyed_event_id(event: str, model_name: str, key: str, flow_run_id: str | None = None) -> uuid.UUID:
    """Return the deterministic id of an event: the same inputs always give the same id.

    Args:
        event: Event name.
        model_name: The model the event is about.
        key: What makes this event distinct within the flow run (e.g. the version promoted).
        flow_run_id: The emitting flow run (None outside a flow run).

    Returns:
        A uuid5; the Prefect server stores and evaluates an event id once.

    Examples:
        >>> keyed_event_id("mlops.model.promoted", "m", "v2", "run-1") == keyed_event_id(
        ...     "mlops.model.promoted", "m", "v2", "run-1")
        True
    """
    return uuid.uuid5(EVENT_ID_NAMESPACE, json.dumps([flow_run_id or "", event, model_name, key]))


def _current_flow_run_id() -> str | None:
    from prefect.context import FlowRunContext, TaskRunContext

    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task_run.flow_run_id:
        return str(task_ctx.task_run.flow_run_id)
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        return str(flow_ctx.flow_run.id)
    return None


@task(name="emit-model-event", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def emit_model_event(event: str, model_name: str, payload: dict[str, Any],
                     labels: dict[str, str] | None = None, key: str | None = None) -> str | None:
    """Emit a Prefect event about a model, once: retries and repeated calls reuse its id.

    The id is :func:`keyed_event_id` of the flow run, the event, the model and ``key`` (by
    default the payload, as canonical JSON). The server skips an id it already has, so a
    retry after a lost acknowledgement does not store, notify or trigger twice. Outside a
    flow run and with no ``key`` the id is random (nothing to key it on).

    Args:
        event: One of the names in this module (e.g. :data:`MODEL_PROMOTED`).
        model_name: Registered model name; the event's resource.
        payload: JSON-serialisable details (see the module docstring).
        labels: Extra resource labels (e.g. ``{"mlops.origin": "data-watch"}``) that triggers match on.
        key: What distinguishes this event from others of the same name, model and flow run
            (default: the payload).

    Returns:
        The event id, or None when events are disabled.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def announce() -> None:
        ...     emit_model_event(MODEL_PROMOTED, "churn-classifier", {"version": "3", "previous_version": "2"},
        ...                      key="3")
    """
    from prefect.events import emit_event

    if event not in ALL_EVENTS:
        raise ValueError(f"Unknown event {event!r}; use one of {ALL_EVENTS}")
    flow_run_id = _current_flow_run_id()
    if key is None and flow_run_id is None:
        event_id = None
    else:
        if key is None:
            key = json.dumps(payload, sort_keys=True, default=str)
        event_id = keyed_event_id(event, model_name, key, flow_run_id)
    emitted = emit_event(
        event=event,
        resource={"prefect.resource.id": model_resource_id(model_name), "prefect.resource.name": model_name,
                  **(labels or {})},
        payload=payload,
        id=event_id,
    )
    run_logger().info("Emitted %s for %s (id %s)", event, model_name, emitted.id if emitted else "-")
    return str(emitted.id) if emitted else None
