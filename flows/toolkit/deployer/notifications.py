"""Failure notifications for `setup --notify URL`, through Prefect's own machinery.

Each webhook URL becomes a notification block, and an automation that posts to it
when a flow run tagged `main` (a deployment of main's) ends Failed, Crashed or
TimedOut. Dev runs carry the tag `dev` only, so they are never notified.

Automations are what Prefect Cloud has, and what a 2.20 server runs when events are
on (PREFECT_EXPERIMENTAL_EVENTS on the server; the local server the template starts
turns them on). A 2.20 server without them gets a flow-run notification policy
instead, the older mechanism only self-hosted servers have, and setup says so.

A webhook URL holds its secret in itself, so it is kept in the block's secret fields
alone and never printed: the block is named after a hash of it.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator
from urllib.parse import urlsplit
from uuid import UUID

import apprise
from prefect.blocks.core import Block
from prefect.blocks.notifications import (
    CustomWebhookNotificationBlock,
    MicrosoftTeamsWebhook,
    SlackWebhook,
)
from prefect.events.schemas.automations import AutomationCore, EventTrigger
from prefect.client.orchestration import PrefectClient
from prefect.events.actions import SendNotification

from toolkit.errors import UserError
from toolkit.settings import Settings
from toolkit.deployer import prefect_api

NOTIFIED_STATES = ("Failed", "Crashed", "TimedOut")
NOTIFIED_TAGS = ("main",)  # the main stage's tag; dev runs have `dev` only
SLACK_HOSTS = ("hooks.slack.com",)
# Prefect 2.20's Teams block takes Power Automate "Workflows" URLs only.
TEAMS_WORKFLOW_HOST_ENDINGS = (".logic.azure.com", ".powerplatform.com")
TEAMS_CONNECTOR_HOST_ENDINGS = (".webhook.office.com", "outlook.office.com")
# What the 2.20 template can carry (FLOW_RUN_NOTIFICATION_TEMPLATE_KWARGS): no
# deployment and no branch. Only runs tagged `main` match, so the stage is known.
MESSAGE_TEMPLATE = """\
Prefect flow run {flow_run_state_name}: {flow_name} / {flow_run_name}
Stage: main
Error: {flow_run_state_message}
Parameters: {flow_run_parameters}
Flow run: {flow_run_url}"""
# The same message through an automation: its template sees the run, its flow and
# its deployment, so the deployment's name is added. The link is made from the
# event's resource: a 2.20 server's `ui_url` knows no flow-run object, only the
# resource, and knows its UI's address only from PREFECT_UI_URL (Cloud always does).
AUTOMATION_BODY = """\
Prefect flow run {{ flow_run.state.name }}: {{ flow.name }} / {{ flow_run.name }}
Deployment: {{ deployment.name }}
Stage: main
Error: {{ flow_run.state.message }}
Parameters: {{ flow_run.parameters }}
Flow run: {{ event.resource|ui_url }}"""
AUTOMATION_SUBJECT = "Prefect flow run {{ flow_run.state.name }}: {{ flow.name }}"
NOT_SHOWN = "not shown: a webhook URL holds its secret"
FALLBACK_NOTE = (
    "this Prefect API serves no automations (a 2.20 server without "
    "PREFECT_EXPERIMENTAL_EVENTS): notification policies instead"
)


def notify_urls(from_command_line: list[str], settings: Settings) -> list[str]:
    """The webhook URLs of --notify and of FLOWS_NOTIFY_URLS, each once, in order."""
    from_environment = settings.notify_urls.split()
    return list(dict.fromkeys([*from_command_line, *from_environment]))


def block_name(url: str) -> str:
    """A name that is the same for the same URL, and from which it cannot be read."""
    return "notify-" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]


def _host(url: str) -> str:
    """The URL's host name; a UserError unless the URL is http(s) with a host."""
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
    except ValueError:  # a malformed port or address
        scheme, host = "", ""
    if scheme not in ("http", "https") or not host:
        raise UserError(
            f"--notify takes http:// or https:// webhook URLs ({NOT_SHOWN})"
        )
    return host.lower()


@contextmanager
def _apprise_silenced() -> Iterator[None]:
    """Apprise, under the Slack and Teams blocks, logs a URL it cannot parse whole."""
    logger = logging.getLogger("apprise")
    was_disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = was_disabled


def webhook_block(url: str) -> Block:
    """The notification block for `url`: Slack, Teams, or a JSON POST to any URL."""
    host = _host(url)
    if host.endswith(TEAMS_CONNECTOR_HOST_ENDINGS):
        raise UserError(
            "--notify: Prefect 2.20's Teams block refuses Office 365 connector URLs "
            "(webhook.office.com); add a Workflows webhook in Teams and give its URL"
        )
    with _apprise_silenced():
        if host in SLACK_HOSTS:
            # The block accepts any URL and would fail only when a run fails.
            if not apprise.Apprise().add(url):
                raise UserError(f"--notify: not a Slack webhook URL ({NOT_SHOWN})")
            return SlackWebhook(url=url)
        if host.endswith(TEAMS_WORKFLOW_HOST_ENDINGS):
            try:
                return MicrosoftTeamsWebhook(url=url)
            except ValueError:
                raise UserError(
                    f"--notify: not a Teams Workflows webhook URL ({NOT_SHOWN})"
                ) from None
    # `url` is a plain field that the API shows: the real URL goes in the secrets.
    return CustomWebhookNotificationBlock(
        name="flow run failures",
        url="{{url}}",
        method="POST",
        json_data={"text": "{{body}}"},
        secrets={"url": url},
    )


def _policy_fields(block_document_id: UUID) -> dict:
    return {
        "block_document_id": block_document_id,
        "is_active": True,
        "tags": list(NOTIFIED_TAGS),
        "state_names": list(NOTIFIED_STATES),
        "message_template": MESSAGE_TEMPLATE,
    }


async def ensure_policy(client: PrefectClient, block_document_id: UUID) -> str:
    """Create or update the policy that notifies the block: what happened.

    Ours is the block's policy for tags ["main"]; another one a person added for the
    same block (for dev runs, say) is left alone.
    """
    wanted = _policy_fields(block_document_id)
    policies = await prefect_api.notification_policies(client)
    ours = [
        policy
        for policy in policies
        if policy.block_document_id == block_document_id
        and policy.tags == wanted["tags"]
    ]
    if not ours:
        await prefect_api.create_notification_policy(client, wanted)
        return "created"
    saved = ours[0]
    if {key: getattr(saved, key) for key in wanted} == wanted:
        return "unchanged"
    await prefect_api.update_notification_policy(client, saved.id, wanted)
    return "updated"


def policy_label(name: str) -> str:
    """How setup names the policy of block `name` in its output."""
    states = ", ".join(NOTIFIED_STATES)
    return f"notification policy {name} ({states}; tag {', '.join(NOTIFIED_TAGS)})"


def automation_name(block_name: str) -> str:
    """The automation that notifies block `block_name`: found again by this name."""
    return f"flows: failed runs of main to {block_name}"


def automation_label(block_name: str) -> str:
    """How setup names the automation of block `block_name` in its output."""
    states = ", ".join(NOTIFIED_STATES)
    tags = ", ".join(NOTIFIED_TAGS)
    return f"automation {automation_name(block_name)} ({states}; tag {tags})"


def failure_automation(block_name: str, block_document_id: UUID) -> AutomationCore:
    """A flow-run state trigger for the notified states of runs tagged main, posting
    to the block."""
    return AutomationCore(
        name=automation_name(block_name),
        description="Made by `python3 flows/util.py setup --notify`: failed, crashed "
        "and timed-out runs of main's deployments, posted to the webhook.",
        enabled=True,
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in NOTIFIED_STATES},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "tag",
                "prefect.resource.id": [f"prefect.tag.{tag}" for tag in NOTIFIED_TAGS],
            },
            posture="Reactive",
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject=AUTOMATION_SUBJECT,
                body=AUTOMATION_BODY,
            )
        ],
    )


def _compared(automation) -> dict:
    """What of an automation setup decides: the rest (ids, times) is the API's."""
    trigger = automation.trigger
    return {
        "description": automation.description,
        "enabled": automation.enabled,
        "expect": sorted(trigger.expect),
        "match": trigger.match.dict(),
        "match_related": trigger.match_related.dict(),
        "posture": trigger.posture,
        "threshold": trigger.threshold,
        "within": trigger.within,
        "actions": [action.dict(exclude={"id"}) for action in automation.actions],
    }


async def ensure_automation(
    client: PrefectClient, block_name: str, block_document_id: UUID
) -> str:
    """Create or update the automation that notifies the block: what happened."""
    wanted = failure_automation(block_name, block_document_id)
    saved = await prefect_api.automations_named(client, wanted.name)
    if not saved:
        await prefect_api.create_automation(client, wanted)
        return "created"
    if _compared(saved[0]) == _compared(wanted):
        return "unchanged"
    await prefect_api.update_automation(client, saved[0].id, wanted)
    return "updated"


async def ensure_notification(
    client: PrefectClient, block_name: str, block_document_id: UUID, automations: bool
) -> str:
    """The line setup prints for the block's notification: an automation where the
    API serves them, else a flow-run notification policy."""
    if automations:
        status = await ensure_automation(client, block_name, block_document_id)
        return f"{automation_label(block_name)}: {status}"
    status = await ensure_policy(client, block_document_id)
    return f"{policy_label(block_name)}: {status}"
