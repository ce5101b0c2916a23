"""Where Prefect 2.20 and Prefect 3 differ, for the toolkit: the one module that asks
which major is installed.

The rest of the toolkit, and the team's flows, call what is here and read the same on
both. Each difference says which releases it follows, so that it can go when its
major does.
"""

from __future__ import annotations

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


async def failed_state_error(state) -> object:
    """What a failed state holds: its exception, read from where the major keeps it.

    2.20 may keep it as a persisted result that must be fetched; 3.3 removed `fetch`
    (a retry condition that passes it raises TypeError, which 3.x logs and then does
    not retry) and reads it with `aresult`.
    """
    if INSTALLED_MAJOR >= 3:
        return await state.aresult(raise_on_failure=False)
    return await state.result(raise_on_failure=False, fetch=True)
