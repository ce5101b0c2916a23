"""Commands about the whole repository: deploy every flow, clean up deleted branches."""

from __future__ import annotations

import ast
import asyncio
import contextlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from prefect.client.orchestration import get_client

from toolkit.deployer import commands, lease, prefect_api
from toolkit.deployer.errors import UserError
from toolkit.deployer.lease import LeaseTiming
from toolkit.deployer.plan import (
    NAME_SEPARATOR,
    branch_slug_of,
    deployment_name_prefix,
    dev_branches_path,
    relative_storage_path,
    short_repository_name,
    pointer_block_name,
)
from toolkit.deployer.repository import branch_slug, stage_of, read_repository, run_git
from toolkit.deployer.settings import SETTINGS, Settings
from toolkit.deployer.storage import storage_for

CLI_FUNCTION = "run_flow_command_line_interface"


def find_flow_files(flows_dir: Path) -> list[tuple[Path, str]]:
    """(flow file, flow function) of each flows/*.py that ends with the command line."""
    found = []
    for path in sorted(flows_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == CLI_FUNCTION
            ):
                function = node.args[1] if len(node.args) > 1 else None
                if isinstance(function, ast.Constant):
                    found.append((path, function.value))
    return found


def deploy_all(
    settings: Settings, flows_dir: Path, docker_label: str | None, dry_run: bool
) -> list:
    """Deploy every flow of flows/ for the current branch through one copy; their
    plans."""
    flow_files = find_flow_files(flows_dir)
    if not flow_files:
        raise UserError(f"no flow file in {flows_dir} ends with {CLI_FUNCTION}(...)")
    # Every plan is checked before anything is written: they share the branch's
    # copy, so a flow refused halfway would leave the others running code it did not
    # check.
    flows = [(commands.load_flow(path, name), path) for path, name in flow_files]
    return commands.deploy_flows(
        settings, flows, docker_label=docker_label, dry_run=dry_run
    )


def delete_branch(
    settings: Settings, flows_dir: Path, branch: str, dry_run: bool
) -> list[str]:
    """Remove a dev branch's deployments, storage copy and storage block."""
    if stage_of(branch, settings) == "main":
        raise UserError(f"{branch} is production: its deployments are never deleted")
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
    name = pointer_block_name(relative_storage_path(repository_name, "dev", slug))
    async with get_client() as client:
        try:
            async with lease.held(client, name, f"branch {branch}", timing):
                return await _delete_slugs(settings, repository_name, [slug], dry_run)
        except lease.LeaseBusy as busy:
            raise UserError(
                f"a deploy of branch {branch} has held its lease for "
                f"{busy.held_seconds} s ({busy.holder}); delete-branch gave up after "
                f"waiting {timing.wait_seconds:g} s "
                f"({SETTINGS['deploy_wait_seconds'].env_var}), nothing deleted: run "
                "it again when that deploy is done"
            ) from None


def prune(settings: Settings, flows_dir: Path, dry_run: bool) -> list[str]:
    """Remove the dev deployments and branch folders of every branch that origin no
    longer has, and every copy that no pointer names."""
    repository = read_repository(flows_dir, settings)
    if repository.origin_url is None:
        raise UserError("no remote named origin: cannot tell which branches are gone")
    heads = run_git(["ls-remote", "--heads", "origin"], repository.top_level)
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
        async with get_client() as client:
            folders = await storage.entries_below(
                self.settings.storage_location(dev_branches_path(self.repository_name))
            )
            stored = {PurePosixPath(folder).name for folder in folders}
            gone = sorted((await self._deployed_slugs(client) | stored) - live_slugs)
            deleted = await self._delete_branches(client, gone)
            in_use = [relative_storage_path(self.repository_name, "main", "main")] + [
                relative_storage_path(self.repository_name, "dev", slug)
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
            client, f"{short_name}{NAME_SEPARATOR}", tags=["dev"]
        )
        return {branch_slug_of(deployment.name) for deployment in deployments}

    async def _delete_branches(self, client, slugs: list[str]) -> list[str]:
        """Delete each branch's deployments, folder and pointer, unless a deploy of
        it is under way (a branch not yet pushed has a folder before a deployment)."""
        deleted = []
        for slug in slugs:
            relative = relative_storage_path(self.repository_name, "dev", slug)
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
        relative_storage = relative_storage_path(repository_name, "dev", slug)
        async with get_client() as client:
            doomed = await prefect_api.names_starting_with(
                client, deployment_name_prefix(short_name, slug), tags=["dev"]
            )
            for deployment in doomed:
                if not dry_run:
                    await client.delete_deployment(deployment.id)
                print(f"{verb} deployment {deployment.name}")
                deleted.append(deployment.name)
        location = settings.storage_location(relative_storage)
        if not dry_run:
            await storage.remove(location, pointer_block_name(relative_storage))
        print(f"{verb} storage {location}")
    return deleted
