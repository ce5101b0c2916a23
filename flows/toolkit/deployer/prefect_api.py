"""Every call the deploy machinery makes to the Prefect API, each one step.

The other modules decide; this one asks the API. A client call anywhere else is a
second truth about how the API is used (what "not found" means, what is retried).
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import (
    BlockDocumentCreate,
    BlockDocumentUpdate,
    DeploymentScheduleCreate,
    WorkPoolCreate,
)
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    DeploymentFilterTags,
)
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import (
    ObjectAlreadyExists,
    ObjectNotFound,
    PrefectHTTPStatusError,
)
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from prefect.utilities.callables import parameter_schema
from prefect.workers.base import BaseWorker

from toolkit import prefect_majors
from toolkit.errors import UserError, one_line
from toolkit.deployer import kubernetes
from toolkit.deployer.plan import DeploymentPlan


def connect() -> PrefectClient:
    """A client of the configured API, to use as `async with prefect_api.connect()`."""
    return get_client()


def require_api_url() -> str:
    """The configured Prefect API, refusing Prefect's throw-away ephemeral one."""
    url = PREFECT_API_URL.value()
    if not url:
        raise UserError(
            "no Prefect API is configured, and a deployment made in Prefect's "
            "throw-away ephemeral API would vanish: run `prefect cloud login`, or "
            "`prefect config set PREFECT_API_URL=<url>`, or `make server` for a local one"
        )
    return url


async def check_api_reachable(client: PrefectClient, url: str) -> None:
    """Fail with the address tried when the API does not answer its health check,
    and, before anything changes, when it serves another Prefect major than this
    client's: each major's client half-fails against the other's server."""
    problem = await client.api_healthcheck()
    if problem is not None:
        reason = one_line(problem)
        raise UserError(f"the Prefect API at {url} is not reachable: {reason}")
    served = await server_version(client)
    major = None if served is None else prefect_majors.major_of(served)
    if major is not None and major != prefect_majors.INSTALLED_MAJOR:
        raise UserError(
            f"the Prefect API at {url} runs Prefect {served}, and this venv has "
            f"Prefect {prefect_majors.INSTALLED_VERSION}: nothing was changed; point "
            f"PREFECT_API_URL at a Prefect {prefect_majors.INSTALLED_MAJOR} server"
        )


async def server_version(client: PrefectClient) -> str | None:
    """The Prefect release the API serves, or None where it does not say (Prefect
    Cloud has no /admin/version)."""
    try:
        # pylint: disable-next=protected-access
        response = await client._client.get("/admin/version")
    except httpx.HTTPStatusError:
        return None
    version = response.json()
    return version if isinstance(version, str) else None


# Pool types whose runs start from the deployment's image.
IMAGE_POOL_TYPES = ("docker", kubernetes.POOL_TYPE)


def base_job_template(pool_type: str) -> dict:
    """The pool type's default base job template, from its installed worker package.

    Never from Prefect's online registry, which a deploy without internet cannot
    reach; a Kubernetes pool's gets the resource request variables.
    """
    worker_class = BaseWorker.get_worker_class_from_type(pool_type)
    if worker_class is None:
        raise UserError(
            f"work pool type {pool_type!r} is unknown here; install its worker "
            "package (prefect-docker for docker; for kubernetes, `make venv "
            "KUBERNETES=1`) or set FLOWS_WORK_POOL_TYPE"
        )
    template = copy.deepcopy(worker_class.get_default_base_job_template())
    if pool_type == kubernetes.POOL_TYPE:
        template = kubernetes.with_resource_requests(template)
    return template


def existing_pool_status(pool, pool_type: str) -> str:
    """`unchanged`, and what of the pool differs from what a deploy would create."""
    status = "unchanged"
    if pool.type != pool_type:
        status += f" (its type {pool.type} is kept: not {pool_type})"
    elif pool_type == kubernetes.POOL_TYPE and not kubernetes.has_resource_requests(
        pool.base_job_template
    ):
        status += (
            " (its job template has no cpu_request or memory_request: the requests "
            "are dropped; delete the pool for a deploy to make it again)"
        )
    return status


async def ensure_work_pool(
    client: PrefectClient, pool_name: str, pool_type: str, queue_names
) -> list[str]:
    """Create the work pool (with its type's base job template) and queues if missing.

    One line per item: created or unchanged. An existing pool is left as it is.
    """
    lines = []
    try:
        status = existing_pool_status(await client.read_work_pool(pool_name), pool_type)
    except ObjectNotFound:
        pool = WorkPoolCreate(
            name=pool_name,
            type=pool_type,
            base_job_template=base_job_template(pool_type),
        )
        try:
            await client.create_work_pool(pool)
            status = "created"
        except ObjectAlreadyExists:
            status = "unchanged"  # created by a concurrent deploy: what we wanted
    lines.append(f"work pool {pool_name} ({pool_type}): {status}")
    for queue_name in queue_names:
        try:
            await client.create_work_queue(name=queue_name, work_pool_name=pool_name)
            status = "created"
        except ObjectAlreadyExists:
            status = "unchanged"
        lines.append(f"work queue {pool_name}/{queue_name}: {status}")
    return lines


def job_variables(plan: DeploymentPlan, storage_needs: dict) -> dict:
    """What the worker needs: for Docker, the image and what the storage asks for;
    for Kubernetes, the image, the namespace and the flow's resource requests."""
    if plan.work_pool_type == "docker":
        return {"image": plan.image, **storage_needs}
    if plan.work_pool_type == kubernetes.POOL_TYPE:
        return {
            "image": plan.image,
            "namespace": plan.kubernetes_namespace,
            **plan.resource_requests,
            **storage_needs,
        }
    return {}


def schedules(plan: DeploymentPlan, paused: bool) -> list[DeploymentScheduleCreate]:
    """The plan's cron schedule (none on dev), inactive when the deployment is paused."""
    if plan.schedule is None:
        return []
    cron = CronSchedule(cron=plan.schedule["cron"], timezone=plan.schedule["timezone"])
    return [DeploymentScheduleCreate(schedule=cron, active=not paused)]


async def read_deployment(client: PrefectClient, plan: DeploymentPlan):
    """The registered deployment of this plan, or None."""
    try:
        return await client.read_deployment_by_name(f"{plan.flow}/{plan.name}")
    except ObjectNotFound:
        return None


def is_paused(deployment) -> bool:
    """Whether a person paused the deployment or one of its schedules."""
    return bool(deployment.paused) or any(
        not schedule.active for schedule in deployment.schedules or []
    )


def registered_fields(deployment) -> dict:
    """The fields `plan` compares, as the API has them for a registered deployment."""
    variables = deployment.job_variables or {}
    schedule = None
    if deployment.schedules:
        cron = deployment.schedules[0].schedule
        schedule = {"cron": cron.cron, "timezone": cron.timezone}
    return {
        "tags": sorted(deployment.tags),
        "work_pool": deployment.work_pool_name,
        "work_queue": deployment.work_queue_name,
        "image": variables.get("image"),
        "namespace": variables.get("namespace"),
        "resource_requests": {
            name: variables[name]
            for name in kubernetes.REQUEST_VARIABLES
            if name in variables
        },
        "entrypoint": deployment.entrypoint,
        "version": deployment.version,
        "description": deployment.description,
        "schedule": schedule,
        "parameters": deployment.parameters,
    }


def planned_fields(plan: DeploymentPlan) -> dict:
    """The fields a deploy of `plan` registers, as registered_fields reads them back."""
    return {
        "tags": sorted(plan.tags),
        "work_pool": plan.work_pool,
        "work_queue": plan.work_queue,
        "image": plan.image if plan.work_pool_type in IMAGE_POOL_TYPES else None,
        "namespace": plan.kubernetes_namespace,
        "resource_requests": (
            plan.resource_requests
            if plan.work_pool_type == kubernetes.POOL_TYPE
            else {}
        ),
        "entrypoint": plan.entrypoint,
        "version": plan.commit[:12],
        "description": plan.description,
        "schedule": plan.schedule,
        "parameters": plan.parameters,
    }


async def register_deployment(  # pylint: disable=too-many-arguments
    client: PrefectClient,
    plan: DeploymentPlan,
    flow,
    *,
    pull_steps: list[dict],
    storage_needs: dict,
    paused: bool,
) -> UUID:
    """Create or update the deployment in one API call."""
    fields = planned_fields(plan)
    flow_id = await client.create_flow_from_name(flow.name)
    return await client.create_deployment(
        flow_id=flow_id,
        name=plan.name,
        version=fields["version"],
        description=fields["description"],
        work_pool_name=fields["work_pool"],
        work_queue_name=fields["work_queue"],
        tags=plan.tags,
        entrypoint=fields["entrypoint"],
        parameters=fields["parameters"],
        schedules=schedules(plan, paused),
        paused=paused,
        parameter_openapi_schema=parameter_schema(flow).dict(),
        enforce_parameter_schema=True,
        pull_steps=pull_steps,
        job_variables=job_variables(plan, storage_needs),
    )


async def delete_deployment(client: PrefectClient, deployment_id: UUID) -> bool:
    """Delete a deployment by id; whether it was there."""
    try:
        await client.delete_deployment(deployment_id)
    except ObjectNotFound:
        return False
    return True


async def names_starting_with(client: PrefectClient, prefix: str, tags=None) -> list:
    """Deployments whose name starts with `prefix` (and that carry `tags`)."""
    deployments = await client.read_deployments(
        deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(like_=prefix),
            tags=DeploymentFilterTags(all_=tags) if tags else None,
        )
    )
    # `like_` matches anywhere in the name: keep the exact prefix only.
    return [d for d in deployments if d.name.startswith(prefix)]


async def read_block_document(
    client: PrefectClient, name: str, type_slug: str, include_secrets: bool = True
):
    """The saved block `type_slug/name`, or None."""
    try:
        return await client.read_block_document_by_name(
            name, type_slug, include_secrets=include_secrets
        )
    except ObjectNotFound:
        return None


async def block_exists(client: PrefectClient, name: str, type_slug: str) -> bool:
    """Whether the workspace has the block `type_slug/name`."""
    found = await read_block_document(client, name, type_slug, include_secrets=False)
    return found is not None


async def delete_block(name: str, type_slug: str) -> None:
    """Delete the block `type_slug/name` if it exists."""
    async with get_client() as client:
        found = await read_block_document(client, name, type_slug, False)
        if found is not None:
            await delete_block_document(client, found.id)


async def delete_block_document(client: PrefectClient, document_id: UUID) -> bool:
    """Delete a block document by id; whether it was there."""
    try:
        await client.delete_block_document(document_id)
    except ObjectNotFound:
        return False
    return True


async def create_block_document(client: PrefectClient, document: BlockDocumentCreate):
    """The document, if this call created it; None when one of its name exists."""
    try:
        return await client.create_block_document(document)
    except ObjectAlreadyExists:
        return None


async def update_block_data(client: PrefectClient, document_id: UUID, data: dict):
    """Replace the fields `data` names in a block document; ObjectNotFound when it is
    gone."""
    await client.update_block_document(document_id, BlockDocumentUpdate(data=data))


async def registered_block_type(client: PrefectClient, block_class) -> tuple:
    """(block type id, schema id) of `block_class` as this code declares it,
    registered when missing; registering reads both ids, and keeps them on the class."""
    try:
        await block_class.register_type_and_schema(client=client)
    except (ObjectAlreadyExists, httpx.HTTPStatusError):
        # Another deployer registered it at the same moment: now it is there.
        await block_class.register_type_and_schema(client=client)
    # pylint: disable-next=protected-access
    return block_class._block_type_id, block_class._block_schema_id


async def server_time(client: PrefectClient) -> datetime:
    """The API's clock (its Date header), else this machine's."""
    date = (await client.hello()).headers.get("date")
    return parsedate_to_datetime(date) if date else datetime.now(timezone.utc)


async def serves_automations(client: PrefectClient) -> bool:
    """Whether the API runs automations: Prefect Cloud does, and a 2.20 server with
    events on; one without answers 404."""
    with prefect_majors.automations_allowed():
        try:
            await client.read_automations_by_name("flows: probe")
        except PrefectHTTPStatusError as error:
            if error.response.status_code == 404:
                return False
            raise
    return True


async def automations_named(client: PrefectClient, name: str) -> list:
    """The automations called `name`."""
    with prefect_majors.automations_allowed():
        return await client.read_automations_by_name(name)


async def create_automation(client: PrefectClient, automation) -> UUID:
    """A new automation; its id."""
    with prefect_majors.automations_allowed():
        return await client.create_automation(automation)


async def update_automation(client: PrefectClient, automation_id: UUID, automation):
    """Replace an automation's definition with `automation`'s."""
    with prefect_majors.automations_allowed():
        await client.update_automation(automation_id, automation)


async def notification_policies(client: PrefectClient) -> list:
    """Every flow-run notification policy, active or not."""
    return await client.read_flow_run_notification_policies(
        prefect_majors.every_notification_policy()
    )


async def create_notification_policy(client: PrefectClient, fields: dict) -> None:
    """A new flow-run notification policy with `fields`."""
    await client.create_flow_run_notification_policy(**fields)


async def update_notification_policy(
    client: PrefectClient, policy_id: UUID, fields: dict
) -> None:
    """Change a flow-run notification policy to `fields`."""
    await client.update_flow_run_notification_policy(policy_id, **fields)


def deployment_ui_url(deployment_id: UUID) -> str | None:
    """Where a person sees the deployment, when the API has a UI."""
    ui_url = PREFECT_UI_URL.value()
    return f"{ui_url}/deployments/deployment/{deployment_id}" if ui_url else None
