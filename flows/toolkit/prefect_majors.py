"""Where Prefect 2.20 and Prefect 3 differ, for the toolkit: the one module that asks
which major is installed.

The rest of the toolkit, and the team's flows, call what is here and read the same on
both. Each difference says which releases it follows, so that it can go when its
major does.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import prefect

# The installed Prefect, and its major: 2 (2.20, the default line) or 3.
INSTALLED_VERSION = prefect.__version__
INSTALLED_MAJOR = int(INSTALLED_VERSION.split(".", 1)[0])

# pylint: disable=ungrouped-imports,wrong-import-position,unused-import
if INSTALLED_MAJOR >= 3:
    # Prefect 3's blocks are pydantic 2 models: their fields are pydantic's own.
    from pydantic import Field, Secret, SecretBytes, SecretStr

    SECRET_TYPES: tuple[type, ...] = (Secret, SecretStr, SecretBytes)
else:
    # Prefect 2.20's blocks are pydantic.v1 models, whichever pydantic is installed.
    from pydantic.v1 import Field, SecretStr
    from pydantic.v1.types import SecretField

    SECRET_TYPES = (SecretField,)
# pylint: enable=ungrouped-imports,wrong-import-position,unused-import


def major_of(version: str) -> int | None:
    """The major of a version string such as "3.9.1"; None when it has none."""
    head = version.strip().split(".", 1)[0]
    return int(head) if head.isdigit() else None


@contextlib.contextmanager
def automations_allowed() -> Iterator[None]:
    """Let the client call the automations API.

    The 2.20 client refuses it toward a self-hosted server unless events are on in
    the client too (PREFECT_EXPERIMENTAL_EVENTS); the server's answer decides
    instead (Cloud always serves them). Prefect 3 has events always on, and no such
    setting.
    """
    if INSTALLED_MAJOR >= 3:
        yield
        return
    # pylint: disable-next=import-outside-toplevel
    from prefect.settings import (
        PREFECT_API_SERVICES_TRIGGERS_ENABLED,
        PREFECT_EXPERIMENTAL_EVENTS,
        temporary_settings,
    )

    with temporary_settings(
        updates={
            PREFECT_EXPERIMENTAL_EVENTS: True,
            PREFECT_API_SERVICES_TRIGGERS_ENABLED: True,
        }
    ):
        yield


def every_notification_policy():
    """The filter of every flow-run notification policy, active or not: 2.20 only
    (Prefect 3.4 removed policies, and turned the saved ones into automations)."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.client.schemas.filters import FlowRunNotificationPolicyFilter

    return FlowRunNotificationPolicyFilter(is_active=None)


async def failed_state_error(state) -> object:
    """What a failed state holds: its exception, read from where the major keeps it.

    2.20 may keep it as a persisted result that must be fetched; 3.3 removed `fetch`
    (a retry condition that passes it raises TypeError, which 3.x logs and then does
    not retry) and reads it with `aresult`.
    """
    if INSTALLED_MAJOR >= 3:
        return await state.aresult(raise_on_failure=False)
    return await state.result(raise_on_failure=False, fetch=True)
