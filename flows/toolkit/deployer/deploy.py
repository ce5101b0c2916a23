"""`deploy`, `deploy-all` and `plan`: a branch's flows into flow storage and the
Prefect API, or what that would change.

A deploy runs these steps in this order: read the repository and guard main; plan
and check every flow (nothing is written while a problem is left); take the branch's
lease; write the new copy of flows/; register each deployment against it; point the
branch's block at the new copy; remove the other copies; print a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import UUID

from prefect import Flow

from toolkit.errors import UserError
from toolkit.settings import Settings
from toolkit.deployer import image_digest, lease, prefect_api
from toolkit.deployer.deployed_files import write_default_ignore_file
from toolkit.deployer.flow_file import (
    CLI_FUNCTION,
    deployment_settings_of,
    find_flow_files,
    load_flow,
)
from toolkit.deployer.plan import DeploymentPlan, build_plan
from toolkit.deployer.repository import guard_main, read_repository
from toolkit.deployer.storage import copy_named_by, storage_for
from toolkit.deployer.validation import find_problems


def unchecked_plan(settings, flow, flow_path, docker_label):
    """The plan and the repository, before validation (delete needs no valid flow)."""
    repository = read_repository(flow_path.parent, settings)
    plan = build_plan(
        settings=settings,
        repository=repository,
        flow=flow,
        flow_path=flow_path,
        docker_label=docker_label,
        deployment_settings=deployment_settings_of(flow),
    )
    return plan, repository


def plan_deployment(
    settings: Settings, flow: Flow, flow_path: Path, docker_label: str | None
) -> tuple[DeploymentPlan, object]:
    """The checked plan and the repository; every problem found is refused at once."""
    plan, repository = unchecked_plan(settings, flow, flow_path, docker_label)
    problems = find_problems(plan, flow)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise UserError(f"{len(problems)} problem(s), nothing deployed:\n{listed}")
    return plan, repository


def deploy(
    settings: Settings,
    flow: Flow,
    flow_path: Path,
    *,
    docker_label: str | None,
    dry_run: bool,
) -> DeploymentPlan:
    """Plan the deployment of `flow` for the current branch, then make it so."""
    return deploy_flows(
        settings, [(flow, flow_path)], docker_label=docker_label, dry_run=dry_run
    )[0]


def deploy_flows(
    settings: Settings,
    flows: list[tuple[Flow, Path]],
    *,
    docker_label: str | None,
    dry_run: bool,
) -> list[DeploymentPlan]:
    """Deploy flows of one checkout through one copy of flows/: every plan checked
    first, then one copy written, every deployment registered against it, and the
    branch's block switched once."""
    planned = [
        plan_deployment(settings, flow, path, docker_label) for flow, path in flows
    ]
    plans = [plan for plan, _ in planned]
    repository = planned[0][1]
    if plans[0].is_main:
        guard_main(repository)
    plans, image_note = pin_main_image(settings, plans)
    if dry_run:
        if image_note:
            print(f"note: {image_note}", file=sys.stderr)
        for plan in plans:
            print(plan.to_json())
        return plans
    api_url = prefect_api.require_api_url()
    storage = storage_for(settings)
    timing = lease.LeaseTiming.from_settings(settings)
    published = asyncio.run(_publish(plans, flows, storage, api_url, timing))
    write_default_ignore_file(repository.top_level)
    for plan, (deployment_id, kept_paused) in zip(plans, published.registered):
        _print_summary(plan, deployment_id, published.copy, kept_paused)
        if image_note:
            print(f"  note: {image_note}")
    return plans


IMAGE_DIGEST_MODES = ("auto", "require")


def pin_main_image(
    settings: Settings, plans: list[DeploymentPlan]
) -> tuple[list[DeploymentPlan], str | None]:
    """Main's plans with the image by the digest its registry holds for the tag:
    the deployment keeps running the image that was tested when the tag moves on.
    Dev plans, and pools that run no image, keep their tag. With no registry
    answering, the plans keep the tag, and a note says so (a deploy prints it in its
    summary, a dry run on stderr: nothing is said before a mistake's one line)."""
    first = plans[0]
    if not first.is_main or first.work_pool_type not in prefect_api.IMAGE_POOL_TYPES:
        return plans, None
    if settings.image_digest not in IMAGE_DIGEST_MODES:
        raise UserError(
            f"FLOWS_IMAGE_DIGEST={settings.image_digest!r}: use one of "
            f"{', '.join(IMAGE_DIGEST_MODES)}"
        )
    try:
        digest = image_digest.resolve_digest(first.image)
    except image_digest.RegistryUnreachable as unreachable:
        if settings.image_digest == "require":
            raise UserError(
                f"{unreachable}: FLOWS_IMAGE_DIGEST=require deploys main only by "
                "its image's digest"
            ) from unreachable
        return (
            plans,
            f"{unreachable}: main runs {first.image} by its tag, which can move",
        )
    image = image_digest.pinned(first.image, digest)
    return [replace(plan, image=image) for plan in plans], None


@dataclass(frozen=True)
class Published:
    """What a deploy left: the copy, and each deployment's id and paused state."""

    copy: str
    registered: list[tuple[UUID, bool]]


async def _publish(plans, flows, storage, api_url, timing) -> Published:
    """Hold the branch's lease, then replace its copy (see _replace_copy).

    The plans share one branch: its location in flow storage, its block, its files;
    `flows` are their (flow, flow file) pairs.
    """
    branch = plans[0]
    async with prefect_api.connect() as client:
        await prefect_api.check_api_reachable(client, api_url)
        await storage.check()
        await prefect_api.ensure_work_pool(
            client, branch.work_pool, branch.work_pool_type, [branch.work_queue]
        )
        label = f"branch {branch.branch}"
        async with lease.held(client, branch.pointer_block, label, timing) as held:
            return await _replace_copy(client, plans, flows, storage, held)


async def _replace_copy(client, plans, flows, storage, held: lease.Lease) -> Published:
    """Write the copy, register, point the block at the copy, remove the other copies.

    Everything read here is read under the lease: no other deploy of the branch
    changes it meanwhile.
    """
    branch = plans[0]
    existing = [await prefect_api.read_deployment(client, plan) for plan in plans]
    # Someone paused it in the UI: re-enabling is a person's decision, not a deploy's.
    paused = [found is not None and prefect_api.is_paused(found) for found in existing]
    pointer = await storage.current_pointer(client, branch.pointer_block)
    old_copy = copy_named_by(pointer)
    new_copy = storage.new_copy(branch.storage_location, branch.commit)
    registered: list[UUID] = []
    try:
        await storage.write_copy(flows[0][1].parent, branch.files, new_copy)
        await held.renew()  # still ours after the upload, before the block changes
        if old_copy is None:  # a first deploy: runs need the block from the start
            await storage.point(client, branch.pointer_block, new_copy)
        pull_steps = await storage.pull_steps(client, branch.pointer_block)
        each = zip(plans, [flow for flow, _ in flows], paused)
        await _register_each(client, each, pull_steps, storage, registered)
        await held.renew()  # renewed: no one else switches before this one does
    except lease.LeaseLost:
        # The deploy that took the lease owns the block and registrations now.
        await storage.discard(new_copy)
        raise
    except BaseException:
        # Put back what was: the failure itself is what the person needs to see.
        created = [new for new, found in zip(registered, existing) if found is None]
        await _take_back(client, created)
        await storage.discard(new_copy, None if old_copy else branch.pointer_block)
        raise
    if old_copy is not None:
        await _switch(client, storage, branch, new_copy, pointer.id)
    if not held.lost:
        await storage.remove_stale_copies(branch.storage_location, new_copy)
    return Published(new_copy, list(zip(registered, paused)))


async def _register_each(client, deployments, pull_steps, storage, registered) -> None:
    """Register each (plan, flow, kept paused) against the copy; each id is added to
    `registered` as it is made, so a failure midway knows what to take back."""
    for plan, flow, kept_paused in deployments:
        registered.append(
            await prefect_api.register_deployment(
                client,
                plan,
                flow,
                pull_steps=pull_steps,
                storage_needs=storage.storage_needs(),
                paused=kept_paused,
            )
        )


async def _take_back(client, deployment_ids: list[UUID]) -> None:
    """Delete the deployments a failed deploy created before it failed: their copy is
    about to be removed. Best effort, like the rest of undoing."""
    for deployment_id in deployment_ids:
        with contextlib.suppress(Exception):
            await prefect_api.delete_deployment(client, deployment_id)


async def _switch(
    client, storage, branch: DeploymentPlan, new_copy: str, pointer_id: UUID
) -> None:
    """Point the branch's block at the new copy; registered already, so a failure
    keeps both copies and says what to do."""
    try:
        await storage.point(client, branch.pointer_block, new_copy, pointer_id)
    except Exception as error:
        raise UserError(
            f"{branch.name} is registered but its runs still fetch the previous copy "
            f"({type(error).__name__}: pointing the block {branch.pointer_block} "
            "failed): run deploy again"
        ) from error


def _print_summary(plan: DeploymentPlan, deployment_id, copy, kept_paused) -> None:
    kind = "main" if plan.is_main else f"dev ({plan.branch})"
    print(f"Deployed {plan.flow}/{plan.name} as {kind}, tags {plan.tags}")
    print(f"  runs on work pool {plan.work_pool}, queue {plan.work_queue}")
    if plan.work_pool_type in prefect_api.IMAGE_POOL_TYPES:
        print(f"  image {plan.image}")
    if plan.kubernetes_namespace:
        requests = plan.resource_requests or "none"
        print(f"  namespace {plan.kubernetes_namespace}, requests {requests}")
    print(f"  code: {len(plan.files)} files from flows/ copied to {copy}")
    if plan.schedule:
        print(f"  schedule {plan.schedule['cron']} ({plan.schedule['timezone']})")
    if plan.parameters:
        print(f"  parameters {plan.parameters}")
    if kept_paused:
        print("  kept PAUSED, as someone paused it: resume it in the UI when ready")
    for item in plan.left_out:
        print(f"  left out on a dev branch: {item}")
    ui_url = prefect_api.deployment_ui_url(deployment_id)
    print(f"  {ui_url}" if ui_url else f"  deployment id {deployment_id}")


def _differences(existing, plan: DeploymentPlan, stored: set[str]):
    """(changed fields with old and new values, files added, files removed)."""
    old, new = prefect_api.registered_fields(existing), prefect_api.planned_fields(plan)
    changes = [
        (field, old[field], value)
        for field, value in new.items()
        if old[field] != value
    ]
    planned = set(plan.files)
    return changes, sorted(planned - stored), sorted(stored - planned)


async def _read_registered(storage, plan: DeploymentPlan, api_url: str):
    """(the registered deployment or None, the files of its stored copy)."""
    async with prefect_api.connect() as client:
        await prefect_api.check_api_reachable(client, api_url)
        existing = await prefect_api.read_deployment(client, plan)
        if existing is None:
            return None, set()
        return existing, await storage.stored_files(client, plan)


def show_plan(settings: Settings, flow: Flow, flow_path: Path, docker_label) -> str:
    """Print what `deploy` would change against what is registered; change nothing."""
    plan, _ = plan_deployment(settings, flow, flow_path, docker_label)
    (plan,), _ = pin_main_image(settings, [plan])
    api_url = prefect_api.require_api_url()
    storage = storage_for(settings)
    existing, stored = asyncio.run(_read_registered(storage, plan, api_url))
    return _print_plan(plan, existing, stored)


def _print_plan(plan: DeploymentPlan, existing, stored: set[str]) -> str:
    """Print create, unchanged or change with each difference; which one it is."""
    title = f"{plan.flow}/{plan.name}"
    if existing is None:
        print(f"create {title}")
        for field, value in prefect_api.planned_fields(plan).items():
            print(f"  {field}: {value!r}")
        return "create"
    changes, added, removed = _differences(existing, plan, stored)
    if not changes and not added and not removed:
        print(f"unchanged {title}")
        return "unchanged"
    print(f"change {title}")
    for field, before, after in changes:
        print(f"  {field}: {before!r} -> {after!r}")
    for name in added:
        print(f"  file added: {name}")
    for name in removed:
        print(f"  file removed: {name}")
    return "change"


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
    flows = [(load_flow(path, name), path) for path, name in flow_files]
    return deploy_flows(settings, flows, docker_label=docker_label, dry_run=dry_run)
