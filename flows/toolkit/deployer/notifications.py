"""Failure notifications for `setup --notify URL`, through Prefect's own machinery.

Each webhook URL becomes a notification block and a flow-run notification policy: the
Prefect server's notification service posts to the block when a flow run tagged
`main` (a deployment of main's) ends Failed, Crashed or TimedOut. Dev runs carry
the tag `dev` only, so they are never notified.

A webhook URL holds its secret in itself, so it is kept in the block's secret fields
alone and never printed: the block is named after a hash of it.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
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
from prefect.client.orchestration import PrefectClient

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
NOT_SHOWN = "not shown: a webhook URL holds its secret"


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
