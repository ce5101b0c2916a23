"""Commands about the whole repository: deploy every flow, clean up a deleted branch."""

from __future__ import annotations

import ast
import asyncio
import shutil
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    DeploymentFilterTags,
)
from prefect.exceptions import ObjectNotFound

from deployer import commands, prefect_api
from deployer.errors import UserError
from deployer.plan import (
    deployment_name_prefix,
    relative_storage_path,
    short_repository_name,
    storage_block_name,
)
from deployer.repository import branch_slug, label_of, read_repository
from deployer.settings import Settings

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
    """Deploy every flow of flows/ for the current branch; their plans."""
    flow_files = find_flow_files(flows_dir)
    if not flow_files:
        raise UserError(f"no flow file in {flows_dir} ends with {CLI_FUNCTION}(...)")
    flows = [(commands.load_flow(path, name), path) for path, name in flow_files]
    return [
        commands.deploy(
            settings, flow, path, docker_label=docker_label, dry_run=dry_run
        )
        for flow, path in flows
    ]


def delete_branch(
    settings: Settings, flows_dir: Path, branch: str, dry_run: bool
) -> list[str]:
    """Remove a dev branch's deployments, storage copy and storage block."""
    if label_of(branch, settings) == "main":
        raise UserError(f"{branch} is production: its deployments are never deleted")
    repository = read_repository(flows_dir, settings)
    slug = branch_slug(branch)
    short_name = short_repository_name(repository.name, settings.repo_name_marker)
    relative_storage = relative_storage_path(repository.name, "dev", slug)
    storage = settings.storage_path / relative_storage
    prefix = deployment_name_prefix(short_name, slug)
    if not dry_run:
        prefect_api.require_api_url()
    names = asyncio.run(
        _delete_deployments(prefix, storage_block_name(relative_storage), dry_run)
    )
    if storage.exists() and not dry_run:
        shutil.rmtree(storage)
    verb = "would delete" if dry_run else "deleted"
    for name in names:
        print(f"{verb} deployment {name}")
    print(f"{verb} storage {storage}")
    return names


async def _delete_deployments(prefix: str, block_name: str, dry_run: bool) -> list[str]:
    async with get_client() as client:
        deployments = await client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(like_=prefix),
                tags=DeploymentFilterTags(all_=["dev"]),
            )
        )
        # `like_` matches anywhere in the name: keep the exact prefix only.
        doomed = [d for d in deployments if d.name.startswith(prefix)]
        if dry_run:
            return [d.name for d in doomed]
        for deployment in doomed:
            await client.delete_deployment(deployment.id)
        try:
            block = await client.read_block_document_by_name(
                block_name, prefect_api.STORAGE_BLOCK_TYPE
            )
            await client.delete_block_document(block.id)
        except ObjectNotFound:
            pass
        return [d.name for d in doomed]
