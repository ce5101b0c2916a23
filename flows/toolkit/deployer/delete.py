"""`delete`, `delete-branch` and `prune`: what deploys made, removed again.

Each holds the lease of the branch it removes (lease.py), so that it never removes a
copy that a deploy of that branch is registering against.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from prefect import Flow

from toolkit.errors import UserError
from toolkit.git import git_text
from toolkit.settings import SETTINGS, Settings
from toolkit.deployer import lease, prefect_api
from toolkit.deployer.deploy import unchecked_plan
from toolkit.deployer.lease import LeaseTiming
from toolkit.deployer.naming import (
    DEV_STAGE,
    MAIN_STAGE,
    NAME_SEPARATOR,
    branch_prefix_of,
    branch_slug,
    branch_slug_of,
    deployment_name_prefix,
    dev_branches_path,
    pointer_block_name,
    relative_storage_path,
    short_repository_name,
    stage_of,
)
from toolkit.deployer.repository import read_repository
from toolkit.deployer.storage import storage_for


def delete(settings: Settings, flow: Flow, flow_path: Path, *, main: bool) -> bool:
    """Remove this branch's deployment of this flow, holding the branch's lease as a
    deploy does; the branch's storage goes with its last deployment. Whether the
    deployment was there."""
    # Unchecked: a flow file with a mistake in it can still have its deployment removed.
    plan, _ = unchecked_plan(settings, flow, flow_path, None)
    if plan.is_main and not main:
        raise UserError(
            f"refusing to delete {plan.name}, a deployment of main, without --main"
        )
    prefect_api.require_api_url()
    timing = LeaseTiming.from_settings(settings)
    return asyncio.run(_delete_flow_held(settings, plan, timing))


async def _delete_flow_held(settings: Settings, plan, timing: LeaseTiming) -> bool:
    """The deployment, then the storage when no deployment of the branch is left:
    under the lease, no deploy of the branch registers against the copy meanwhile."""
    storage = storage_for(settings)
    async with prefect_api.connect() as client:
        try:
            async with lease.held(
                client, plan.pointer_block, f"branch {plan.branch}", timing
            ):
                existing = await prefect_api.read_deployment(client, plan)
                deleted = existing is not None and await prefect_api.delete_deployment(
                    client, existing.id
                )
                print(
                    f"deleted {plan.flow}/{plan.name}"
                    if deleted
                    else f"no deployment {plan.name}"
                )
                remaining = await prefect_api.names_starting_with(
                    client, branch_prefix_of(plan.name)
                )
                if not remaining:
                    await storage.remove(plan.storage_location, plan.pointer_block)
                    print(
                        f"deleted storage {plan.storage_location} (no deployment of "
                        f"{plan.branch} left)"
                    )
        except lease.LeaseBusy as busy:
            raise _waited_too_long("delete", plan.branch, busy, timing) from None
    return deleted


def _waited_too_long(command: str, branch: str, busy, timing: LeaseTiming) -> UserError:
    """A removal that gave up on a branch a deploy holds: one line, nothing deleted."""
    return UserError(
        f"a deploy of branch {branch} has held its lease for {busy.held_seconds} s "
        f"({busy.holder}); {command} gave up after waiting {timing.wait_seconds:g} s "
        f"({SETTINGS['deploy_wait_seconds'].env_var}), nothing deleted: run it again "
        "when that deploy is done"
    )


def delete_branch(
    settings: Settings, flows_dir: Path, branch: str, dry_run: bool
) -> list[str]:
    """Remove a dev branch's deployments, storage copy and storage block."""
    if stage_of(branch, settings.main_branch) == MAIN_STAGE:
        raise UserError(f"{branch} is main: its deployments are never deleted")
    repository = read_repository(flows_dir, settings)
    if not dry_run:
        prefect_api.require_api_url()
    timing = LeaseTiming.from_settings(settings)
    return asyncio.run(
        _delete_branch_held(settings, repository.name, branch, timing, dry_run)
    )


async def _delete_branch_held(settings, repository_name, branch, timing, dry_run):
    """Delete the branch under its lease: a deploy of it under way finishes first (it
    would register against a removed copy), and one killed leaves no lease behind."""
    slug = branch_slug(branch)
    if dry_run:
        return await _delete_slugs(settings, repository_name, [slug], dry_run)
    name = pointer_block_name(relative_storage_path(repository_name, DEV_STAGE, slug))
    async with prefect_api.connect() as client:
        try:
            async with lease.held(client, name, f"branch {branch}", timing):
                return await _delete_slugs(settings, repository_name, [slug], dry_run)
        except lease.LeaseBusy as busy:
            raise _waited_too_long("delete-branch", branch, busy, timing) from None


def prune(settings: Settings, flows_dir: Path, dry_run: bool) -> list[str]:
    """Remove the dev deployments and branch folders of every branch that origin no
    longer has, and every copy that no pointer names."""
    repository = read_repository(flows_dir, settings)
    if repository.origin_url is None:
        raise UserError("no remote named origin: cannot tell which branches are gone")
    heads = git_text(repository.top_level, "ls-remote", "--heads", "origin")
    live = {
        branch_slug(line.split("refs/heads/", 1)[1])
        for line in heads.splitlines()
        if "refs/heads/" in line
    }
    if not dry_run:
        prefect_api.require_api_url()
    pruning = _Pruning(
        settings,
        repository.name,
        dry_run,
        # Never waiting: a deploy that holds a branch's lease tidies its location.
        replace(LeaseTiming.from_settings(settings), wait_seconds=0),
    )
    return asyncio.run(pruning.prune(live))


@dataclass(frozen=True)
class _Pruning:
    """One `prune`: what it reads, and whether it only says what it would do."""

    settings: Settings
    repository_name: str
    dry_run: bool
    timing: LeaseTiming

    async def prune(self, live_slugs: set[str]) -> list[str]:
        """Delete the branches gone from origin, then the stale copies of the rest;
        the deployments deleted."""
        storage = storage_for(self.settings)
        async with prefect_api.connect() as client:
            folders = await storage.entries_below(
                self.settings.storage_location(dev_branches_path(self.repository_name))
            )
            stored = {PurePosixPath(folder).name for folder in folders}
            gone = sorted((await self._deployed_slugs(client) | stored) - live_slugs)
            deleted = await self._delete_branches(client, gone)
            in_use = [
                relative_storage_path(self.repository_name, MAIN_STAGE, MAIN_STAGE)
            ] + [
                relative_storage_path(self.repository_name, DEV_STAGE, slug)
                for slug in sorted(stored & live_slugs)
            ]
            stale = await self._remove_stale_copies(client, storage, in_use)
        if not gone and not stale:
            print(
                "nothing to prune: every dev deployment's branch is on origin, and "
                "every copy is the one its pointer names"
            )
        return deleted

    async def _deployed_slugs(self, client) -> set[str]:
        short_name = short_repository_name(
            self.repository_name, self.settings.repo_name_marker
        )
        deployments = await prefect_api.names_starting_with(
            client, f"{short_name}{NAME_SEPARATOR}", tags=[DEV_STAGE]
        )
        return {branch_slug_of(deployment.name) for deployment in deployments}

    async def _delete_branches(self, client, slugs: list[str]) -> list[str]:
        """Delete each branch's deployments, folder and pointer, unless a deploy of
        it is under way (a branch not yet pushed has a folder before a deployment)."""
        deleted = []
        for slug in slugs:
            relative = relative_storage_path(self.repository_name, DEV_STAGE, slug)
            with _skipped_while_deploying(self.settings.storage_location(relative)):
                async with self._branch_lease(client, relative):
                    deleted += await _delete_slugs(
                        self.settings, self.repository_name, [slug], self.dry_run
                    )
        return deleted

    async def _remove_stale_copies(self, client, storage, relatives) -> list[str]:
        """Remove the copies below each branch's location that its pointer does not
        name: left by killed deploys, or by releases of the template before the
        lease."""
        verb = "would delete" if self.dry_run else "deleted"
        removed = []
        for relative in relatives:
            location = self.settings.storage_location(relative)
            with _skipped_while_deploying(location):
                async with self._branch_lease(client, relative):
                    current = await storage.current_copy(
                        client, pointer_block_name(relative)
                    )
                    stale = await storage.remove_stale_copies(
                        location, current, self.dry_run
                    )
                for copy in stale:
                    print(f"{verb} stale copy {copy}")
                removed += stale
        return removed

    def _branch_lease(self, client, relative: str):
        """The branch's lease, so that no deploy of it runs meanwhile (a dry run
        changes nothing: it only checks that no deploy holds it)."""
        hold = lease.checked_free if self.dry_run else lease.held
        return hold(client, pointer_block_name(relative), relative, self.timing)


@contextlib.contextmanager
def _skipped_while_deploying(location: str):
    """Leave a branch that a deploy holds now: it tidies its location itself."""
    try:
        yield
    except lease.LeaseBusy as busy:
        print(
            f"skipped {location}: a deploy of it holds its lease ({busy.holder}, "
            f"{busy.held_seconds} s)"
        )


async def _delete_slugs(settings, repository_name, slugs, dry_run) -> list[str]:
    """Delete the dev deployments, storage copy and block of each branch slug."""
    short_name = short_repository_name(repository_name, settings.repo_name_marker)
    verb = "would delete" if dry_run else "deleted"
    storage = storage_for(settings)
    deleted = []
    for slug in slugs:
        relative_storage = relative_storage_path(repository_name, DEV_STAGE, slug)
        async with prefect_api.connect() as client:
            doomed = await prefect_api.names_starting_with(
                client, deployment_name_prefix(short_name, slug), tags=[DEV_STAGE]
            )
            for deployment in doomed:
                if not dry_run:
                    await prefect_api.delete_deployment(client, deployment.id)
                print(f"{verb} deployment {deployment.name}")
                deleted.append(deployment.name)
        location = settings.storage_location(relative_storage)
        if not dry_run:
            await storage.remove(location, pointer_block_name(relative_storage))
        print(f"{verb} storage {location}")
    return deleted
