"""Automations that are not deployment triggers: notifications when something needs a person.

Two automations share one notification block:

* ``<name>``: a pipeline run failed or crashed, a challenger was rejected, a deployment failed. The
  subject names the flow and deployment (or the model and what was rejected), the body says what
  happened in a sentence (the run's state message, the gate's reasons), then the flow, deployment,
  run and model, and a link to the run in the Prefect UI (``{{ flow_run | ui_url }}``: the server's
  ``PREFECT_UI_URL``).
* ``<name>-action-failed``: an automation fired but its action failed (``prefect.automation.action.failed``),
  e.g. a trigger's parameters did not render or a deployment refused them, so no run was created.
  It ignores automations whose name starts with ``<name>`` (its own), so a webhook that is down cannot loop.
"""

from __future__ import annotations

from typing import Any

from tasks.events import DEPLOYMENT_FAILED, MODEL_REJECTED

ACTION_FAILED = "prefect.automation.action.failed"
NOTIFY_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed", MODEL_REJECTED, DEPLOYMENT_FAILED,
                 ACTION_FAILED)

#: Shared opening of the pipeline templates: the model, and where it happened (flow / deployment / run).
#: ``flow``, ``deployment`` and ``flow_run`` are the objects Prefect resolves from the event's resource and
#: related resources (an mlops event emitted inside a flow run carries that run); each may be None.
_CONTEXT = (
    "{%- set is_run = event.event.startswith('prefect.flow-run.') -%}"
    "{%- set model = (event.resource.name or event.resource.id | replace('mlops.model.', '', 1)) if not is_run"
    " else ((flow_run.parameters.get('model_name') if flow_run and flow_run.parameters else none)) -%}"
    "{%- set where = (flow.name if flow else 'a flow') ~ ((' / ' ~ deployment.name) if deployment else '') -%}"
)
SUBJECT = (
    _CONTEXT + "prefect-mlops: "
    "{%- if event.event == 'mlops.model.rejected' %} {{ model }}: challenger v{{ event.payload.version }} rejected"
    "{%- elif event.event == 'mlops.deployment.failed' %} {{ model }}: deploying v{{ event.payload.version }} failed"
    "{%- elif is_run %} {{ where }} {{ event.event.split('.')[-1] | lower }}{{ (' (' ~ model ~ ')') if model }}"
    "{%- else %} {{ model }}: {{ event.event }}{% endif %}"
    "{{ (' in ' ~ where) if not is_run and flow }}"
)
BODY = (
    _CONTEXT
    + "{%- if event.event == 'mlops.model.rejected' %}The challenger, version {{ event.payload.version }} of "
    "{{ model }}, was rejected by the promotion gate; the champion"
    "{{ (' (v' ~ event.payload.champion_version ~ ')') if event.payload.champion_version }} keeps serving."
    "{%- elif event.event == 'mlops.deployment.failed' %}Deploying version {{ event.payload.version }} of "
    "{{ model }} failed: {{ event.payload.reason | default('no reason given') }}."
    "{%- elif is_run %}The flow run {{ flow_run.name if flow_run else event.resource.name }} of {{ where }} ended "
    "{{ event.event.split('.')[-1] }}: {{ (flow_run.state.message if flow_run and flow_run.state else '') "
    "or 'no message' }}."
    "{%- else %}{{ event.event }} on {{ model }}.{% endif %}\n\n"
    "Flow: {{ flow.name if flow else '-' }}\n"
    "Deployment: {{ deployment.name if deployment else '- (run from Python, not a deployment)' }}\n"
    "Flow run: {{ flow_run.name if flow_run else '-' }}"
    "{{ (' (' ~ flow_run.state.name ~ ')') if flow_run and flow_run.state }}\n"
    "Model: {{ model or '-' }}\n"
    "{%- if event.payload.reasons %}\nReasons:{% for r in event.payload.reasons %}\n- {{ r }}{% endfor %}"
    "{% endif %}"
    "{%- for k, v in event.payload.items() if not is_run and k != 'reasons' %}\n{{ k | replace('_', ' ') }}: "
    "{{ v }}{% endfor %}\n\n"
    "Open the run: {{ (flow_run | ui_url) if flow_run else 'no flow run' }}\n"
    "Event: {{ event.event }} at {{ event.occurred }} ({{ event | ui_url }})"
)
ACTION_FAILED_SUBJECT = ("prefect-mlops: automation '{{ event.resource.name }}' fired but could not "
                         "{{ event.payload.action_type | default('act') | replace('-', ' ') }}: nothing was started")
ACTION_FAILED_BODY = (
    "Automation '{{ event.resource.name }}' ({{ event.resource.id }}) fired at {{ event.occurred }}, "
    "but its action '{{ event.payload.action_type | default('?') }}' failed, so no run was created.\n"
    "reason: {{ event.payload.reason | default('not given') }}\n"
    "{% if event.payload.validation_error %}validation error: {{ event.payload.validation_error }}\n{% endif %}"
    "{% if event.payload.template_error %}template error: {{ event.payload.template_error }}\n{% endif %}"
    "{% for r in event.related %}{{ r.role }}: {{ r.id }}\n{% endfor %}"
    "What to do: check the triggering event against the event contract (README, Events: resource id "
    "mlops.model.<name>, payload fields) and the deployment's parameters; then start the run by hand "
    "(prefect deployment run) or emit the event again.")


def _replace(name: str, automation: Any) -> Any:
    from prefect.automations import Automation

    try:
        Automation.read(name=name).delete()
    except ValueError:
        pass
    return automation.create()


def create_notification_automation(url: str, name: str = "mlops-notify", block_name: str = "mlops-notify",
                                   apprise: bool = False) -> Any:
    """Create (or replace) the automations that notify a person when something did not happen as planned.

    A pipeline run failed or crashed, a challenger was rejected, a deployment failed, or an
    automation fired but could not start its run.

    Args:
        url: A webhook URL (JSON POST with ``subject`` and ``body``) or, with ``apprise``,
            an Apprise URL (Slack, Teams, e-mail, ...).
        name: Automation name (an existing automation of that name is replaced); the failed-action
            automation is ``<name>-action-failed``.
        block_name: Name of the notification block saved for it.
        apprise: Treat ``url`` as an Apprise URL.

    Returns:
        The created pipeline automation (the failed-action one is created beside it).

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
    pipeline_events = set(NOTIFY_EVENTS) - {ACTION_FAILED}
    action_failed_name = f"{name}-action-failed"
    _replace(action_failed_name, Automation(
        name=action_failed_name,
        description="Notify a person when an automation fired but could not start its run.",
        trigger=EventTrigger(expect={ACTION_FAILED},
                             match={"prefect.resource.id": "prefect.automation.*",
                                    "prefect.resource.name": f"!{name}*"},
                             posture="Reactive", threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject=ACTION_FAILED_SUBJECT,
                                  body=ACTION_FAILED_BODY)],
    ))
    return _replace(name, Automation(
        name=name,
        description="Notify a person when a prefect-mlops pipeline fails or a challenger is rejected.",
        trigger=EventTrigger(expect=pipeline_events, match={"prefect.resource.id": ["prefect.flow-run.*",
                                                                                    "mlops.model.*"]},
                             posture="Reactive", threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    ))
