"""Keyed events against the real Prefect server: a retry or a repeated call stores one event, not two."""

from __future__ import annotations

import uuid

import httpx
from prefect import flow, task
from servers import wait_until

from tasks.events import MODEL_PROMOTED, MODEL_REJECTED, emit_model_event, model_resource_id


def stored(api: str, model: str, event: str = MODEL_PROMOTED) -> list[dict]:
    """The events of this name and model that the server has stored."""
    body = {"filter": {"event": {"name": [event]}, "resource": {"id": [model_resource_id(model)]}}, "limit": 50}
    response = httpx.post(f"{api}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()["events"]


def wait_for_sentinel(api: str, model: str) -> None:
    """Emit a last, distinct event and wait until it is stored: every event sent before it was processed too."""
    emit_model_event.fn(MODEL_REJECTED, model, {"version": "sentinel"}, key=str(uuid.uuid4()))
    wait_until(lambda: bool(stored(api, model, MODEL_REJECTED)), 60, "the sentinel event to be stored", interval=0.5)


ATTEMPTS: dict[str, int] = {}


@task(retries=2, retry_delay_seconds=0)
def promote_then_fail_once(model: str) -> str | None:
    """Emit, then fail on the first attempt only, as a task that loses its acknowledgement would."""
    event_id = emit_model_event.fn(MODEL_PROMOTED, model, {"version": "2"}, key="v2")
    ATTEMPTS[model] = ATTEMPTS.get(model, 0) + 1
    if ATTEMPTS[model] == 1:
        raise ConnectionError("lost the acknowledgement")
    return event_id


@flow(name="keyed-events")
def keyed_events(model: str) -> list[str | None]:
    retried = promote_then_fail_once(model)
    again = emit_model_event(MODEL_PROMOTED, model, {"version": "2"}, key="v2")
    by_payload = [emit_model_event(MODEL_PROMOTED, model, {"version": "3"}) for _ in range(2)]
    return [retried, again, *by_payload]


def test_a_retried_or_repeated_emit_stores_one_event(prefect_server: str) -> None:
    model = f"keyed-{uuid.uuid4().hex[:8]}"
    retried, again, first_by_payload, second_by_payload = keyed_events(model)
    assert ATTEMPTS[model] == 2  # the task really ran twice
    assert retried == again and first_by_payload == second_by_payload and retried != first_by_payload

    wait_for_sentinel(prefect_server, model)
    events = stored(prefect_server, model)
    assert sorted(e["id"] for e in events) == sorted([retried, first_by_payload])
    assert sorted(e["payload"]["version"] for e in events) == ["2", "3"]


def test_another_flow_run_with_the_same_key_is_another_event(prefect_server: str) -> None:
    model = f"keyed-{uuid.uuid4().hex[:8]}"

    @flow(name="promote-once")
    def promote_once() -> str | None:
        return emit_model_event(MODEL_PROMOTED, model, {"version": "2"}, key="v2")

    first, second = promote_once(), promote_once()
    assert first != second
    wait_for_sentinel(prefect_server, model)
    assert sorted(e["id"] for e in stored(prefect_server, model)) == sorted([first, second])
