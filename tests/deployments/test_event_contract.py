"""The event contract against the real Prefect server: every event it allows starts its run.

For each deployment trigger, a minimal event (only the resource id, plus the origin label where
the trigger matches on it; no name label, no payload) and a full one (every payload key) must
each create a flow run with the right parameters. A trigger whose action fails reaches a person
through the notification automation. Deployments here get their own names and no runner serves
them, so the runs they create stay scheduled and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events import emit_event
from servers import wait_until
from tests_support import Receiver

from deployments.automations import create_notification_automation
from deployments.definitions import definitions, runner_deployments
from tasks.events import (
    DATA_VERSIONED,
    DRIFT_DETECTED,
    EVENT_PAYLOADS,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
    ORIGIN_LABEL,
    PERFORMANCE_DECAYED,
    emit_model_event,
    model_resource_id,
)

SUFFIX = "-contract-test"
WINDOW = {"start": "2026-11-20T00:00:00+00:00", "end": "2026-11-21T00:00:00+00:00", "rows": 300}
SAMPLE_VALUES: dict[str, Any] = {"window": WINDOW, "drifted_columns": ["monthly_charges"], "reasons": ["ok"],
                                 "drift_share": 0.5, "value": 0.7, "baseline": 0.8, "new_commit": True}
#: trigger deployment -> (events it expects, labels its trigger requires)
TRIGGERS = {"on-new-data": ((DATA_VERSIONED,), {ORIGIN_LABEL: "data-watch"}),
            "on-drift": ((DRIFT_DETECTED, PERFORMANCE_DECAYED), {}),
            "on-promotion": ((MODEL_PROMOTED, MODEL_ROLLED_BACK), {})}
_counter = itertools.count()


def full_payload(event: str) -> dict[str, Any]:
    required, optional = EVENT_PAYLOADS[event]
    return {key: SAMPLE_VALUES.get(key, f"{key}-value") for key in (*required, *optional)}


def emit_minimal(event: str, model: str, labels: dict[str, str]) -> None:
    emit_event(event=event, resource={"prefect.resource.id": model_resource_id(model), **labels})


def emit_full(event: str, model: str, labels: dict[str, str]) -> None:
    emit_model_event.fn(event, model, full_payload(event), labels=labels or None)


async def _runs(deployment_ids: list[uuid.UUID]) -> list:
    async with get_client() as client:
        return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(
            any_=deployment_ids)))


def runs_for(deployment_id: uuid.UUID, model: str) -> list:
    return [r for r in asyncio.run(_runs([deployment_id])) if r.parameters.get("model_name") == model]


@pytest.fixture(scope="module")
def trigger_deployments(prefect_server: str) -> Iterator[dict[str, uuid.UUID]]:
    """The trigger deployments under test names, applied, with their automations loaded by the trigger service."""
    defs = [dataclasses.replace(d, name=d.name + SUFFIX) for d in definitions(cooldown=dt.timedelta(seconds=60))
            if d.name in TRIGGERS]
    ids = {d.name.removesuffix(SUFFIX): d.apply() for d in runner_deployments(defs)}
    try:
        # The trigger service loads new automations asynchronously: probe each trigger until it fires.
        for name, deployment_id in ids.items():
            events, labels = TRIGGERS[name]

            def fired(name: str = name, deployment_id: uuid.UUID = deployment_id, events: tuple = events,
                      labels: dict = labels) -> bool:
                model = f"probe-{name}-{next(_counter)}"
                emit_full(events[0], model, labels)
                try:
                    wait_until(lambda: bool(runs_for(deployment_id, model)), 4, "probe run", interval=0.5)
                except TimeoutError:
                    return False
                return True

            wait_until(fired, 150, f"the {name} trigger to fire", interval=0.5)
        yield ids
    finally:
        async def cleanup() -> None:
            async with get_client() as client:
                for run in await _runs(list(ids.values())):
                    await client.delete_flow_run(run.id)
                for deployment_id in ids.values():
                    await client.delete_deployment(deployment_id)

        asyncio.run(cleanup())


@pytest.mark.parametrize("shape", ["minimal", "full"])
def test_every_allowed_event_starts_its_run_with_the_right_parameters(
        trigger_deployments: dict[str, uuid.UUID], shape: str) -> None:
    expected: list[tuple[str, str, str]] = []  # (deployment, event, model)
    for name, (events, labels) in TRIGGERS.items():
        for event in events:
            model = f"{shape}-{event.rsplit('.', 1)[1]}-{next(_counter)}"
            (emit_minimal if shape == "minimal" else emit_full)(event, model, labels)
            expected.append((name, event, model))

    def all_started() -> bool:
        return all(runs_for(trigger_deployments[name], model) for name, _, model in expected)

    wait_until(all_started, 120, f"a run for every {shape} event", interval=1.0)
    for name, event, model in expected:
        [run] = runs_for(trigger_deployments[name], model)
        assert run.parameters["model_name"] == model
        if name == "on-promotion":
            continue  # deploy-model takes no trigger parameter
        trigger = run.parameters["trigger"]
        assert trigger["event"] == event and trigger["resource"] == model_resource_id(model)
        assert trigger["event_id"] and trigger["occurred"]
        assert trigger["payload"] == ({} if shape == "minimal" else json.loads(json.dumps(full_payload(event))))
        if name == "on-drift":
            assert run.parameters["feedback_since"] == (None if shape == "minimal" else WINDOW["start"])
            assert run.parameters["feedback_hours"] == 24.0


@flow(name="contract-target")
def contract_target(value: str | None = None) -> str | None:
    return value


def test_an_automation_that_cannot_start_its_run_notifies_a_person(prefect_server: str, receiver: str) -> None:
    from prefect.automations import Automation
    from prefect.events import EventTrigger
    from prefect.events.actions import RunDeployment

    create_notification_automation(receiver, name="contract-notify", block_name="contract-notify")
    deployment_id = contract_target.to_deployment(name="broken-template").apply()
    # The template the triggers used to have: undefined for an event without a window.
    automation = Automation(
        name="contract-broken-trigger",
        trigger=EventTrigger(expect={"contract.test.broken"}, match={"prefect.resource.id": "contract.*"},
                             posture="Reactive", threshold=1),
        actions=[RunDeployment(source="selected", deployment_id=deployment_id,
                               parameters={"value": "{{ event.payload.window.start }}"})],
    ).create()
    try:
        def arrived() -> bool:
            return any("contract-broken-trigger" in m.get("subject", "") for m in Receiver.received)

        def notified() -> bool:  # repeated: the trigger service loads new automations asynchronously
            if not arrived():
                emit_event(event="contract.test.broken", resource={"prefect.resource.id": "contract.broken"})
            return arrived()

        wait_until(notified, 150, "the failed-action notification", interval=5.0)
        message = next(m for m in Receiver.received if "contract-broken-trigger" in m["subject"])
        assert "could not run deployment" in message["subject"], message
        assert "no run was created" in message["body"] and "reason:" in message["body"], message
        assert "InvalidJinja" in message["body"], message  # the reason, as the server gives it
        assert f"target: prefect.deployment.{deployment_id}" in message["body"], message
        assert not asyncio.run(_runs([deployment_id]))
    finally:
        automation.delete()

        async def cleanup() -> None:
            async with get_client() as client:
                await client.delete_deployment(deployment_id)
                for name in ("contract-notify", "contract-notify-action-failed"):
                    for found in await client.read_automations_by_name(name):
                        await client.delete_automation(found.id)

        asyncio.run(cleanup())
