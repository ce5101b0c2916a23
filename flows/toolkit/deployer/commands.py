"""The commands of a flow file's command line, step by step."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client

from toolkit.deployer import lease, prefect_api
from toolkit.deployer.plan import (
    DeploymentPlan,
    branch_prefix_of,
    build_plan,
    write_default_ignore_file,
)
from toolkit.deployer.repository import guard_production, read_repository
from toolkit.deployer.storage import storage_for
from toolkit.deployer.validation import find_problems
from toolkit.deployer.deployment_settings import NO_SETTINGS, DeploymentSettings
from toolkit.deployer.errors import UserError, one_line
from toolkit.deployer.settings import Settings


def _import_flow_module(flow_path: Path):
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file and Path(main_file).resolve() == flow_path:
        return main
    # A private name: two checkouts may each hold a flow file of the same name.
    digest = hashlib.sha256(str(flow_path).encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(
        f"_flows_{flow_path.stem}_{digest}", flow_path
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up there
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # any failure of the user's module is theirs to fix
        detail = one_line(error)
        raise UserError(
            f"{flow_path.name} does not import: {type(error).__name__}: {detail}"
        ) from error
    return module


def load_flow(flow_path: Path, function_name: str) -> Flow:
    """The flow object `function_name` of the flow file, which must be in flows/."""
    flows_dir = flow_path.parent
    if flows_dir.name != "flows" or not (flows_dir / "util.py").is_file():
        raise UserError(
            f"{flow_path} is not in a flows/ folder: flow files live directly in "
            "flows/, next to util.py, so that their deployment's copy holds them"
        )
    if flow_path.suffix != ".py" or not flow_path.is_file():
        raise UserError(f"{flow_path} is not a Python file")
    module = _import_flow_module(flow_path)
    candidate = getattr(module, function_name, None)
    if candidate is None:
        raise UserError(f"{flow_path.name} defines no function {function_name!r}")
    if not isinstance(candidate, Flow):
        raise UserError(
            f"{function_name!r} in {flow_path.name} is not a flow: decorate it with "
            "@flow from prefect"
        )
    return candidate


def deployment_settings_of(flow: Flow) -> DeploymentSettings:
    """The `DEPLOYMENT = util.DeploymentSettings(...)` of the flow's file, if any."""
    module = sys.modules.get(flow.fn.__module__)
    declared = getattr(module, "DEPLOYMENT", NO_SETTINGS)
    if not isinstance(declared, DeploymentSettings):
        raise UserError(
            f"DEPLOYMENT in {flow.fn.__module__} must be util.DeploymentSettings(...)"
        )
    return declared


def _unchecked_plan(settings, flow, flow_path, docker_label):
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
    plan, repository = _unchecked_plan(settings, flow, flow_path, docker_label)
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
    if plans[0].is_production:
        guard_production(repository)
    if dry_run:
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
    return plans


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
    async with get_client() as client:
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
    old_copy = await storage.current_copy(client, branch.pointer_block)
    new_copy = storage.new_copy(branch.storage_location, branch.commit)
    registered: list[UUID] = []
    try:
        flows_dir = flows[0][1].parent
        await storage.write_copy(flows_dir, branch.files, new_copy)
        await held.renew()  # still ours after the upload, before the block changes
        if old_copy is None:  # a first deploy: runs need the block from the start
            await storage.point(branch.pointer_block, new_copy)
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
        await _switch(storage, branch, new_copy)
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
            await client.delete_deployment(deployment_id)


async def _switch(storage, branch: DeploymentPlan, new_copy: str) -> None:
    """Point the branch's block at the new copy; registered already, so a failure
    keeps both copies and says what to do."""
    try:
        await storage.point(branch.pointer_block, new_copy)
    except Exception as error:
        raise UserError(
            f"{branch.name} is registered but its runs still fetch the previous copy "
            f"({type(error).__name__}: pointing the block {branch.pointer_block} "
            "failed): run deploy again"
        ) from error


def _print_summary(plan: DeploymentPlan, deployment_id, copy, kept_paused) -> None:
    kind = "production" if plan.is_production else f"dev ({plan.branch})"
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
    async with get_client() as client:
        await prefect_api.check_api_reachable(client, api_url)
        existing = await prefect_api.read_deployment(client, plan)
        if existing is None:
            return None, set()
        return existing, await storage.stored_files(client, plan)


def show_plan(settings: Settings, flow: Flow, flow_path: Path, docker_label) -> str:
    """Print what `deploy` would change against what is registered; change nothing."""
    plan, _ = plan_deployment(settings, flow, flow_path, docker_label)
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


def delete(settings: Settings, flow: Flow, flow_path: Path, *, production: bool):
    """Remove this branch's deployment of this flow; its storage copy with the last one."""
    # Unchecked: a flow file with a mistake in it can still have its deployment removed.
    plan, _ = _unchecked_plan(settings, flow, flow_path, None)
    if plan.is_production and not production:
        raise UserError(
            "refusing to delete the production deployment without --production"
        )
    prefect_api.require_api_url()
    storage = storage_for(settings)
    deleted, remaining = asyncio.run(
        prefect_api.delete_deployment(plan, branch_prefix_of(plan.name))
    )
    print(
        f"deleted {plan.flow}/{plan.name}" if deleted else f"no deployment {plan.name}"
    )
    if not remaining:
        asyncio.run(storage.remove(plan.storage_location, plan.pointer_block))
        print(
            f"deleted storage {plan.storage_location} (no deployment of {plan.branch} left)"
        )
    return deleted
