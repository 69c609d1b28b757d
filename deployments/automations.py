"""Automations that are not deployment triggers: notifications when something needs a person."""

from __future__ import annotations

from typing import Any

from tasks.events import DEPLOYMENT_FAILED, MODEL_REJECTED

NOTIFY_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed", MODEL_REJECTED, DEPLOYMENT_FAILED)
SUBJECT = "prefect-mlops: {{ event.event }} on {{ event.resource.name or event.resource.id }}"
BODY = ("{{ event.event }} at {{ event.occurred }}\n"
        "resource: {{ event.resource.id }}\n"
        "details: {{ event.payload }}")


def create_notification_automation(url: str, name: str = "mlops-notify", block_name: str = "mlops-notify",
                                   apprise: bool = False) -> Any:
    """Create (or replace) an automation that notifies when a pipeline fails or a promotion is rejected.

    Args:
        url: A webhook URL (JSON POST with ``subject`` and ``body``) or, with ``apprise``,
            an Apprise URL (Slack, Teams, e-mail, ...).
        name: Automation name (an existing automation of that name is replaced).
        block_name: Name of the notification block saved for it.
        apprise: Treat ``url`` as an Apprise URL.

    Returns:
        The created automation.

    Examples:
        >>> from deployments.automations import create_notification_automation
        >>> create_notification_automation("https://hooks.example.com/mlops")  # doctest: +SKIP
    """
    from prefect.automations import Automation
    from prefect.blocks.notifications import AppriseNotificationBlock, CustomWebhookNotificationBlock
    from prefect.events import EventTrigger
    from prefect.events.actions import SendNotification

    if apprise:
        block: Any = AppriseNotificationBlock(url=url)
    else:
        block = CustomWebhookNotificationBlock(name=name, url=url, method="POST", allow_private_urls=True,
                                               json_data={"subject": "{{subject}}", "body": "{{body}}"})
    block_id = block.save(block_name, overwrite=True)
    try:
        Automation.read(name=name).delete()
    except ValueError:
        pass
    return Automation(
        name=name,
        description="Notify a person when a prefect-mlops pipeline fails or a challenger is rejected.",
        trigger=EventTrigger(expect=set(NOTIFY_EVENTS), match={"prefect.resource.id": ["prefect.flow-run.*",
                                                                                       "mlops.model.*"]},
                             posture="Reactive", threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    ).create()
