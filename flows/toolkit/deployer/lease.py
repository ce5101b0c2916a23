"""One deploy at a time per branch: a lease in the Prefect API, seen by every deployer.

A branch's lease is a block document of the type Flows Deploy Lease named as the
branch's pointer block. The API keeps block names unique per type, so of the deploys
that create it at the same moment exactly one succeeds. It holds the lease from before
it writes its copy until it has removed the stale ones, then deletes the record; the
others wait, and take their turn.

The lease expires, so that a killed deploy blocks the next one for a bounded time.
The holder renews its record every third of its lease time (FLOWS_DEPLOY_LEASE_SECONDS,
written into the record). A record unrenewed for longer than that, by the API's clock
(its time of the last renewal against the time it answers with), was left by a killed
deploy: the next one deletes it, by its id so never a newer holder's, and tries again.
A holder renews once more just before it switches the branch's pointer: renewed, no
one can take the lease for a whole lease time, and a lease taken from it is told by
its record being gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from typing import AsyncIterator
from uuid import UUID

import httpx
from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import BlockDocumentCreate
from prefect.exceptions import ObjectNotFound

from toolkit.prefect_majors import Field
from toolkit.errors import UserError
from toolkit.settings import SETTINGS, Settings
from toolkit.deployer import prefect_api

# How often a waiter looks at the record, at most.
POLL_SECONDS = 0.5


class DeployLease(Block):
    """The record of a deploy that holds its branch's lease."""

    _block_type_name = "Flows Deploy Lease"
    _description = (
        "Held by a deploy while it replaces its branch's copy of flows/, and deleted "
        "when it is done. One that a killed deploy left expires by itself."
    )

    holder: str = Field(..., description="Host and process id of the deploy")
    token: str = Field(..., description="Unique to this holding of the lease")
    lease_seconds: float = Field(..., description="Expiry when it is not renewed")
    renewals: int = Field(0, description="Changed by each renewal")


LEASE_TYPE = DeployLease.get_block_type_slug()


@dataclass(frozen=True)
class LeaseTiming:
    """How long a lease lasts unrenewed, and how long a deploy waits for one."""

    lease_seconds: float
    wait_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "LeaseTiming":
        """The timing the settings ask for; a value that is no number is refused."""
        return cls(
            lease_seconds=_seconds("deploy_lease_seconds", settings, minimum=1),
            wait_seconds=_seconds("deploy_wait_seconds", settings, minimum=0),
        )


def _seconds(name: str, settings: Settings, minimum: float) -> float:
    """The setting `name` as a number of seconds, at least `minimum`."""
    value = getattr(settings, name)
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= minimum:  # also refuses nan
        raise UserError(
            f"{SETTINGS[name].env_var} {value!r} is not a number of seconds of at "
            f"least {minimum:g}"
        )
    return seconds


class LeaseBusy(UserError):
    """Another deploy holds the lease for longer than this one waits."""

    def __init__(self, label: str, holder: str, held_seconds: int, waited: float):
        super().__init__(
            f"another deploy of {label} has held its lease for {held_seconds} s "
            f"({holder}); this one gave up after waiting {waited:g} s "
            f"({SETTINGS['deploy_wait_seconds'].env_var}): deploy again when it is done"
        )
        self.holder = holder
        self.held_seconds = held_seconds


class LeaseLost(UserError):
    """Another deploy took the lease: this one had left it unrenewed too long."""


class Lease:
    """The lease this process holds: its record, renewed until it is released."""

    def __init__(self, client: PrefectClient, label: str, record_id: UUID, timing):
        self.client = client
        self.label = label
        self.record_id = record_id
        self.lease_seconds = timing.lease_seconds
        self.renewals = 0
        self.lost = False

    async def renew(self) -> None:
        """Change the record, so that waiters see it alive; LeaseLost when it is gone."""
        self.renewals += 1
        try:
            await prefect_api.update_block_data(
                self.client, self.record_id, {"renewals": self.renewals}
            )
        except ObjectNotFound as error:
            self.lost = True
            raise LeaseLost(
                f"another deploy took the lease of {self.label}: this one left it "
                f"unrenewed for more than {self.lease_seconds:g} s "
                f"({SETTINGS['deploy_lease_seconds'].env_var}); nothing switched, "
                "deploy again"
            ) from error

    async def keep_renewed(self) -> None:
        """Renew every third of the lease time until the lease is lost or released."""
        while not self.lost:
            await asyncio.sleep(self.lease_seconds / 3)
            # A hiccup of the API is tried again at the next turn; `renew` before the
            # switch is the one that must succeed.
            with contextlib.suppress(LeaseLost, httpx.HTTPError):
                await self.renew()

    async def release(self) -> None:
        """Delete the record; one that cannot be deleted expires by itself."""
        try:
            # Not found: taken and released by another deploy already.
            await prefect_api.delete_block_document(self.client, self.record_id)
        except httpx.HTTPError as error:
            print(
                f"warning: releasing the lease of {self.label} failed ({error}); it "
                f"expires within {self.lease_seconds:g} s",
                file=sys.stderr,
            )


@contextlib.asynccontextmanager
async def held(
    client: PrefectClient, name: str, label: str, timing: LeaseTiming
) -> AsyncIterator[Lease]:
    """Hold the lease `name` (the pointer block's name) while the body runs; wait
    for it up to the timing's wait, then LeaseBusy. `label` names it to a person."""
    lease = await _acquire(client, name, label, timing)
    renewing = asyncio.create_task(lease.keep_renewed())
    try:
        yield lease
    finally:
        renewing.cancel()
        await asyncio.wait([renewing])
        await lease.release()


async def _acquire(client, name: str, label: str, timing: LeaseTiming) -> Lease:
    """Create the record, or wait: for its holder to release it, or for it to expire."""
    new_record = await _new_record(client, name, timing)
    give_up_at = time.monotonic() + timing.wait_seconds
    told = False
    while True:
        created = await _create(client, new_record)
        if created is not None:
            return Lease(client, label, created.id, timing)
        found = await _read(client, name)
        if found is None:
            continue  # released between the two calls: race for it again
        if found.data.get("token") == new_record.data["token"]:
            # Created, though the answer was lost: the record is ours.
            return Lease(client, label, found.id, timing)
        busy = await _busy(client, found, label, timing)
        if busy is None:
            # Left by a killed deploy: delete exactly that record, then race again.
            await prefect_api.delete_block_document(client, found.id)
            continue
        if time.monotonic() >= give_up_at:
            raise busy
        if not told:
            told = True
            print(
                f"waiting for another deploy of {label}: {busy.holder} has held its "
                f"lease for {busy.held_seconds} s (waiting up to "
                f"{timing.wait_seconds:g} s)",
                flush=True,
            )
        await asyncio.sleep(min(POLL_SECONDS, timing.lease_seconds / 4))


@contextlib.asynccontextmanager
async def checked_free(
    client: PrefectClient, name: str, label: str, timing: LeaseTiming
) -> AsyncIterator[None]:
    """For a command that only says what it would do: LeaseBusy when a deploy holds
    the lease `name` now, as `held` would raise it; holds nothing itself."""
    found = await _read(client, name)
    if found is not None:
        busy = await _busy(client, found, label, timing)
        if busy is not None:
            raise busy
    yield


async def _busy(client, record, label: str, timing: LeaseTiming) -> LeaseBusy | None:
    """What a record means to a deploy that wants the lease: LeaseBusy while its
    holder renews it, None once it has expired (its holder was killed)."""
    held_seconds, unrenewed_seconds = await _ages(client, record)
    if unrenewed_seconds > record.data.get("lease_seconds", timing.lease_seconds):
        return None
    holder = record.data.get("holder", "a deploy")
    return LeaseBusy(label, holder, round(held_seconds), timing.wait_seconds)


async def _ages(client, record) -> tuple[float, float]:
    """(seconds since the record was made, since it was last renewed) by the API's
    clock: the deployers' clocks never count, so one set wrong cannot break a lease."""
    now = await prefect_api.server_time(client)
    since_made = (now - record.created).total_seconds()
    since_renewed = (now - record.updated).total_seconds()
    return since_made, since_renewed


async def _new_record(client, name: str, timing: LeaseTiming) -> BlockDocumentCreate:
    """The record this deploy creates to hold the lease."""
    block_type, schema = await prefect_api.registered_block_type(client, DeployLease)
    return BlockDocumentCreate(
        name=name,
        block_type_id=block_type,
        block_schema_id=schema,
        data={
            "holder": f"{socket.gethostname()} pid {os.getpid()}",
            "token": secrets.token_hex(8),
            "lease_seconds": timing.lease_seconds,
            "renewals": 0,
        },
    )


async def _create(client, record: BlockDocumentCreate):
    """The record, if this call created it; None when one of its name exists."""
    try:
        return await prefect_api.create_block_document(client, record)
    except httpx.HTTPStatusError as error:
        # Two creates at the same moment can meet the unique index as a server
        # error: only when a record is there did another deploy win.
        if error.response.status_code >= 500 and await _read(client, record.name):
            return None
        raise


async def _read(client, name: str):
    """The lease's record, or None."""
    return await prefect_api.read_block_document(client, name, LEASE_TYPE)
