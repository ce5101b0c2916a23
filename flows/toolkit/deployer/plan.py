"""Decide everything a deploy will do, before it does any of it: a pure function of
the settings, the checkout's facts and the flow."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit.deployment_settings import NO_SETTINGS, DeploymentSettings
from toolkit.settings import Settings
from toolkit.deployer.deployed_files import list_deployable_files, read_ignore_patterns
from toolkit.deployer.kubernetes import POOL_TYPE as KUBERNETES_POOL_TYPE
from toolkit.deployer.naming import (
    MAIN_STAGE,
    Repository,
    deployment_name_prefix,
    docker_registry,
    image_tag,
    pointer_block_name,
    relative_storage_path,
    short_repository_name,
    stage_of,
)


@dataclass(frozen=True)
class DeploymentPlan:  # pylint: disable=too-many-instance-attributes
    """One deployment of one flow, as `deploy` will register it."""

    name: str
    flow: str
    entrypoint: str
    repository: str
    branch: str
    branch_slug: str
    commit: str
    stage: str
    tags: list[str]
    work_pool: str
    work_pool_type: str
    work_queue: str
    image: str
    kubernetes_namespace: str | None
    resource_requests: dict[str, str]
    storage_location: str
    pointer_block: str
    files: list[str]
    description: str
    schedule: dict | None
    parameters: dict
    left_out: list[str]

    @property
    def is_main(self) -> bool:
        """Whether this is a deployment of main, the stage that runs for real."""
        return self.stage == MAIN_STAGE

    def to_json(self) -> str:
        """The plan as one JSON object, as `deploy --dry-run` prints it."""
        return json.dumps(asdict(self), indent=2)


def _main_only(settings: DeploymentSettings) -> list[str]:
    """What a dev deployment leaves out of the flow's deployment settings."""
    left_out = []
    if settings.schedule:
        left_out.append(f"schedule {settings.schedule} ({settings.timezone})")
    if settings.main_parameters:
        left_out.append(f"main parameters {settings.main_parameters}")
    if settings.tags:
        left_out.append(f"tags {list(settings.tags)}")
    return left_out


def _schedule(settings: DeploymentSettings) -> dict | None:
    """The schedule the flow declares for main, if any."""
    if not settings.schedule:
        return None
    return {"cron": settings.schedule, "timezone": settings.timezone}


def _kubernetes_namespace(settings: Settings) -> str | None:
    """Where a Kubernetes pool's runs start; None on any other pool."""
    if settings.work_pool_type != KUBERNETES_POOL_TYPE:
        return None
    return settings.kubernetes_namespace


def build_plan(  # pylint: disable=too-many-arguments
    *,
    settings: Settings,
    repository: Repository,
    flow,
    flow_path: Path,
    docker_label: str | None,
    deployment_settings: DeploymentSettings = NO_SETTINGS,
) -> DeploymentPlan:
    """Everything a deploy of this flow from this checkout will do."""
    stage = stage_of(repository.branch, settings.main_branch)
    slug = repository.branch_slug
    relative_storage = relative_storage_path(repository.name, stage, slug)
    short_name = short_repository_name(repository.name, settings.repo_name_marker)
    registry = docker_registry(settings.docker_registry, repository.origin_url)
    on_main = stage == MAIN_STAGE
    return DeploymentPlan(
        name=f"{deployment_name_prefix(short_name, slug)}{flow_path.stem}",
        flow=flow.name,
        entrypoint=f"{flow_path.name}:{flow.fn.__name__}",
        repository=repository.name,
        branch=repository.branch,
        branch_slug=slug,
        commit=repository.commit,
        stage=stage,
        tags=[stage, *(deployment_settings.tags if on_main else ())],
        work_pool=settings.work_pool,
        work_pool_type=settings.work_pool_type,
        work_queue=stage,
        image=f"{registry}/{repository.name.lower()}:{image_tag(docker_label, stage)}",
        kubernetes_namespace=_kubernetes_namespace(settings),
        resource_requests=deployment_settings.resource_requests,
        storage_location=settings.storage_location(relative_storage),
        pointer_block=pointer_block_name(relative_storage),
        files=list_deployable_files(
            flow_path.parent, read_ignore_patterns(repository.top_level)
        ),
        description=deployment_settings.describe(flow.description),
        schedule=_schedule(deployment_settings) if on_main else None,
        parameters=(dict(deployment_settings.main_parameters) if on_main else {}),
        left_out=[] if on_main else _main_only(deployment_settings),
    )
