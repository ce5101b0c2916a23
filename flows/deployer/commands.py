"""The commands of a flow file's command line, step by step."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import sys
from pathlib import Path

from prefect import Flow
from prefect.client.orchestration import get_client

from deployer import prefect_api
from deployer.plan import DeploymentPlan, build_plan, write_default_ignore_file
from deployer.repository import guard_production, read_repository
from deployer.storage import replaced_directory
from deployer.errors import UserError
from deployer.settings import Settings


def _import_flow_module(flow_path: Path):
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file and Path(main_file).resolve() == flow_path:
        return main
    # A private name: two checkouts may each hold an example_flow.py.
    digest = hashlib.sha256(str(flow_path).encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(
        f"_flows_{flow_path.stem}_{digest}", flow_path
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up there
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # any failure of the user's module is theirs to fix
        detail = " ".join(str(error).split())
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


def deploy(
    settings: Settings,
    flow: Flow,
    flow_path: Path,
    *,
    docker_label: str | None,
    dry_run: bool,
) -> DeploymentPlan:
    """Plan the deployment of `flow` for the current branch, then make it so."""
    repository = read_repository(flow_path.parent, settings)
    plan = build_plan(
        settings=settings,
        repository=repository,
        flow_name=flow.name,
        flow_path=flow_path,
        function_name=flow.fn.__name__,
        docker_label=docker_label,
    )
    if plan.is_production:
        guard_production(repository)
    if dry_run:
        print(plan.to_json())
        return plan
    api_url = prefect_api.require_api_url()
    write_default_ignore_file(repository.top_level)
    deployment_id = asyncio.run(_apply(plan, flow, flow_path.parent, settings, api_url))
    _print_summary(plan, deployment_id)
    return plan


async def _apply(plan, flow, flows_dir, settings, api_url):
    async with get_client() as client:
        await prefect_api.check_api_reachable(client, api_url)
        await prefect_api.ensure_work_pool(
            client, plan.work_pool, plan.work_pool_type, plan.work_queue
        )
        await prefect_api.save_storage_block(plan.storage_block, plan.storage)
        storage_root = str(settings.storage_path)
        with replaced_directory(flows_dir, plan.files, Path(plan.storage)):
            return await prefect_api.register_deployment(
                client, plan, flow, storage_root
            )


def _print_summary(plan: DeploymentPlan, deployment_id) -> None:
    kind = "production" if plan.is_production else f"dev ({plan.branch})"
    print(f"Deployed {plan.flow}/{plan.name} as {kind}, tags {plan.tags}")
    print(f"  runs on work pool {plan.work_pool}, queue {plan.work_queue}")
    if plan.work_pool_type == "docker":
        print(f"  image {plan.image}")
    print(f"  code: {len(plan.files)} files from flows/ copied to {plan.storage}")
    ui_url = prefect_api.deployment_ui_url(deployment_id)
    print(f"  {ui_url}" if ui_url else f"  deployment id {deployment_id}")
