"""Decide everything a deploy will do, before it does any of it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect.utilities.filesystem import filter_files

from toolkit.deployer.repository import Repository, branch_slug, stage_of
from toolkit.deployer.deployment_settings import NO_SETTINGS, DeploymentSettings
from toolkit.deployer.errors import UserError
from toolkit.deployer.kubernetes import POOL_TYPE as KUBERNETES_POOL_TYPE
from toolkit.deployer.settings import Settings

IGNORE_FILE_NAME = ".prefectignore"
# Written to the top of the repository when it has no .prefectignore of its own: what
# a flow run never needs, and what must never leave the laptop.
DEFAULT_IGNORE_PATTERNS = (
    "# What is never copied from flows/ into flow storage (gitignore syntax,",
    "# relative to flows/).",
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    "tests/",
    "output/",
    ".env",
    "*.secret",
)
# What of the toolkit a run never needs, left out whatever .prefectignore says: its
# tests and checks, its documents, and the release's record and ownership list.
TOOLKIT_NEVER_DEPLOYED = (
    "toolkit/tests/",
    "toolkit/checks/",
    "toolkit/*.md",
    "toolkit/*.txt",
    "toolkit/*.json",
)
_DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_GITHUB_OWNER = re.compile(r"github\.com[/:]([^/]+)/")


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
    def is_production(self) -> bool:
        """Whether this is the production deployment (branch main)."""
        return self.stage == "main"

    def to_json(self) -> str:
        """The plan as one JSON object, as `deploy --dry-run` prints it."""
        return json.dumps(asdict(self), indent=2)


def read_ignore_patterns(top_level: Path) -> list[str]:
    """The patterns of the repository's .prefectignore (or the default ones), and the
    toolkit's files a run never needs."""
    ignore_file = top_level / IGNORE_FILE_NAME
    if ignore_file.is_file():
        lines = ignore_file.read_text(encoding="utf-8").splitlines()
    else:
        lines = list(DEFAULT_IGNORE_PATTERNS)
    patterns = [line for line in lines if line.strip() and not line.startswith("#")]
    return patterns + list(TOOLKIT_NEVER_DEPLOYED)


def write_default_ignore_file(top_level: Path) -> None:
    """Create .prefectignore with the default patterns when the repository has none."""
    ignore_file = top_level / IGNORE_FILE_NAME
    if not ignore_file.exists():
        ignore_file.write_text("\n".join(DEFAULT_IGNORE_PATTERNS) + "\n", "utf-8")


def list_deployable_files(flows_dir: Path, ignore_patterns: list[str]) -> list[str]:
    """The files of flows/ that go into storage, relative to flows/, sorted."""
    included = filter_files(str(flows_dir), ignore_patterns, include_dirs=False)
    return sorted(Path(path).as_posix() for path in included)


def short_repository_name(repository_name: str, marker: str) -> str:
    """`{org}-{team}-flows-{name}` gives `{name}`; any other name is kept whole."""
    _, found, short = repository_name.partition(marker)
    return short if found and short else repository_name


def relative_storage_path(repository_name: str, stage: str, slug: str) -> str:
    """Where below the storage root a branch's copy of flows/ lives."""
    if stage == "main":
        return f"main/{repository_name}"
    return f"{dev_branches_path(repository_name)}/{slug}"


def dev_branches_path(repository_name: str) -> str:
    """Where below the storage root the dev branches' folders live, one per slug."""
    return f"dev/{repository_name}"


NAME_SEPARATOR = " | "


def deployment_name_prefix(short_name: str, slug: str) -> str:
    """What every deployment name of one branch of one repository starts with."""
    return f"{short_name}{NAME_SEPARATOR}{slug}{NAME_SEPARATOR}"


def branch_prefix_of(deployment_name: str) -> str:
    """`{short} | {slug} | ` of a deployment name `{short} | {slug} | {module}`."""
    return deployment_name.rsplit(NAME_SEPARATOR, 1)[0] + NAME_SEPARATOR


def branch_slug_of(deployment_name: str) -> str:
    """`{slug}` of a deployment name `{short} | {slug} | {module}`."""
    return deployment_name.split(NAME_SEPARATOR)[1]


def docker_registry(settings: Settings, repository: Repository) -> str:
    """The registry setting, else GitHub's container registry of origin's owner."""
    if settings.docker_registry:
        return settings.docker_registry.rstrip("/")
    match = _GITHUB_OWNER.search(repository.origin_url or "")
    return f"ghcr.io/{match.group(1).lower()}" if match else "localhost:5000"


def image_tag(docker_label: str | None, stage: str) -> str:
    """The image tag to run on: `main` unless a dev deploy names another one."""
    if docker_label is None:
        return "main"
    if stage == "main":
        raise UserError(
            "--docker-label is refused on main: production only runs the main image"
        )
    tag = branch_slug(docker_label)
    if not _DOCKER_TAG.match(tag):
        raise UserError(f"--docker-label {docker_label!r} is not a usable image tag")
    return tag


def pointer_block_name(relative_storage: str) -> str:
    """A Prefect block name (lowercase, digits, dashes) unique to one storage path."""
    readable = re.sub(r"[^a-z0-9]+", "-", relative_storage.lower()).strip("-")
    digest = hashlib.sha256(relative_storage.encode()).hexdigest()[:8]
    return f"flows-{readable[:80]}-{digest}"


def _main_only(settings: DeploymentSettings) -> list[str]:
    """What a dev deployment leaves out of the flow's deployment settings."""
    left_out = []
    if settings.schedule:
        left_out.append(f"schedule {settings.schedule} ({settings.timezone})")
    if settings.production_parameters:
        left_out.append(f"production parameters {settings.production_parameters}")
    if settings.tags:
        left_out.append(f"tags {list(settings.tags)}")
    return left_out


def _schedule(settings: DeploymentSettings) -> dict | None:
    """The production schedule the flow declares, if any."""
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
    stage = stage_of(repository.branch, settings)
    slug = repository.branch_slug
    relative_storage = relative_storage_path(repository.name, stage, slug)
    short_name = short_repository_name(repository.name, settings.repo_name_marker)
    registry = docker_registry(settings, repository)
    production = stage == "main"
    return DeploymentPlan(
        name=f"{deployment_name_prefix(short_name, slug)}{flow_path.stem}",
        flow=flow.name,
        entrypoint=f"{flow_path.name}:{flow.fn.__name__}",
        repository=repository.name,
        branch=repository.branch,
        branch_slug=slug,
        commit=repository.commit,
        stage=stage,
        tags=[stage, *(deployment_settings.tags if production else ())],
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
        schedule=_schedule(deployment_settings) if production else None,
        parameters=(
            dict(deployment_settings.production_parameters) if production else {}
        ),
        left_out=[] if production else _main_only(deployment_settings),
    )
