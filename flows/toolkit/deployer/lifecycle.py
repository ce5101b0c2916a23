"""Commands about the whole repository: deploy every flow, clean up deleted branches."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from prefect.client.orchestration import get_client

from toolkit.deployer import commands, prefect_api
from toolkit.deployer.errors import UserError
from toolkit.deployer.plan import (
    NAME_SEPARATOR,
    branch_slug_of,
    deployment_name_prefix,
    relative_storage_path,
    short_repository_name,
    pointer_block_name,
)
from toolkit.deployer.repository import branch_slug, stage_of, read_repository, run_git
from toolkit.deployer.settings import Settings
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
    return asyncio.run(
        _delete_slugs(settings, repository.name, [branch_slug(branch)], dry_run)
    )


def prune(settings: Settings, flows_dir: Path, dry_run: bool) -> list[str]:
    """Remove the dev deployments of every branch that origin no longer has."""
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
    return asyncio.run(_prune(settings, repository.name, live, dry_run))


async def _prune(settings, repository_name, live_slugs, dry_run) -> list[str]:
    short_name = short_repository_name(repository_name, settings.repo_name_marker)
    async with get_client() as client:
        deployments = await prefect_api.names_starting_with(
            client, f"{short_name}{NAME_SEPARATOR}", tags=["dev"]
        )
    slugs = {branch_slug_of(deployment.name) for deployment in deployments}
    gone = sorted(slugs - live_slugs)
    if not gone:
        print("nothing to prune: every dev deployment's branch is on origin")
        return []
    return await _delete_slugs(settings, repository_name, gone, dry_run)


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
