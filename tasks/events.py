"""Prefect events of prefect-mlops: every name and payload, in one place.

Every event's resource is the model: ``prefect.resource.id = "mlops.model.<model name>"``,
with ``prefect.resource.name = <model name>`` and, where set, ``mlops.origin = <flow that
emitted it>``. Deployment triggers match on the event name and those labels. Payloads are JSON objects with these keys:

==============================  ===========================================================
event                           payload keys
==============================  ===========================================================
``mlops.data.versioned``        ``dataset_path``, ``rev``, ``md5``, ``new_commit``, ``reference_md5``
``mlops.data.validation_failed`` ``dataset_path``, ``rev``, ``violations``
``mlops.model.promoted``        ``version``, ``previous_version``, ``run_id``, ``reasons``
``mlops.model.rejected``        ``version``, ``champion_version``, ``run_id``, ``reasons``
``mlops.model.rolled_back``     ``version``, ``previous_version``, ``reason``
``mlops.model.deployed``        ``version``, ``previous_version``, ``url``, ``bento``
``mlops.deployment.failed``     ``version``, ``reason``, ``serving_version``, ``alias_restored_to``
``mlops.monitoring.drift_detected``  ``drift_share``, ``drifted_columns``, ``window``, ``report``
``mlops.monitoring.performance_decayed``  ``metric``, ``value``, ``baseline``, ``window``
``mlops.monitoring.data_quality_failed``  ``issues``, ``window``
==============================  ===========================================================
"""

from __future__ import annotations

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
DEPLOYMENT_FAILED = "mlops.deployment.failed"
DRIFT_DETECTED = "mlops.monitoring.drift_detected"
PERFORMANCE_DECAYED = "mlops.monitoring.performance_decayed"
DATA_QUALITY_FAILED = "mlops.monitoring.data_quality_failed"

ALL_EVENTS = (DATA_VERSIONED, DATA_VALIDATION_FAILED, MODEL_PROMOTED, MODEL_REJECTED, MODEL_ROLLED_BACK,
              MODEL_DEPLOYED, DEPLOYMENT_FAILED, DRIFT_DETECTED, PERFORMANCE_DECAYED, DATA_QUALITY_FAILED)


def model_resource_id(model_name: str) -> str:
    """Return the event resource id naming a model."""
    return f"mlops.model.{model_name}"


@task(name="emit-model-event", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def emit_model_event(event: str, model_name: str, payload: dict[str, Any],
                     labels: dict[str, str] | None = None) -> str | None:
    """Emit a Prefect event about a model.

    Args:
        event: One of the names in this module (e.g. :data:`MODEL_PROMOTED`).
        model_name: Registered model name; the event's resource.
        payload: JSON-serialisable details (see the module docstring).
        labels: Extra resource labels (e.g. ``{"mlops.origin": "data-watch"}``) that triggers match on.

    Returns:
        The event id, or None when events are disabled.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def announce() -> None:
        ...     emit_model_event(MODEL_PROMOTED, "churn-classifier", {"version": "3", "previous_version": "2"})
    """
    from prefect.events import emit_event

    if event not in ALL_EVENTS:
        raise ValueError(f"Unknown event {event!r}; use one of {ALL_EVENTS}")
    emitted = emit_event(
        event=event,
        resource={"prefect.resource.id": model_resource_id(model_name), "prefect.resource.name": model_name,
                  **(labels or {})},
        payload=payload,
    )
    run_logger().info("Emitted %s for %s", event, model_name)
    return str(emitted.id) if emitted else None
