"""How every name a deploy uses derives from a checkout's facts: the branch's slug,
the stage, the deployment's name, the storage place, the pointer block, the image.

Pure functions of their arguments: no git, no Prefect, no settings read here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UserError

MAIN_STAGE = "main"
DEV_STAGE = "dev"
NAME_SEPARATOR = " | "
# Prefect refuses these in a deployment name; Docker tags and folder names are stricter
# still, so a branch is reduced to the characters all three accept.
_UNSAFE_BRANCH_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")
_DOCKER_TAG_MAX_LENGTH = 128
_DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_GITHUB_OWNER = re.compile(r"github\.com[/:]([^/]+)/")


def short_digest(text: str, length: int = 8) -> str:
    """The first `length` hex digits of the text's sha256: a short name that two
    different texts practically never share, and from which the text cannot be read."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class Repository:
    """The facts of one checkout that decide how its flows are deployed."""

    top_level: Path
    name: str
    branch: str
    commit: str
    origin_url: str | None

    @property
    def branch_slug(self) -> str:
        """The branch as it appears in deployment names, storage paths and image tags."""
        return branch_slug(self.branch)


def branch_slug(branch: str) -> str:
    """A readable, collision-free form of a branch name.

    A name made only of letters, digits, `_`, `.` and `-` is kept as it is; any other
    name has its runs of other characters replaced by `-` and gains a short hash of the
    original, so `feature/x-1` and `feature-x-1` never share a deployment or a copy.
    """
    slug = _UNSAFE_BRANCH_CHARACTERS.sub("-", branch).strip("-.")
    if slug == branch and len(branch) <= _DOCKER_TAG_MAX_LENGTH:
        return branch
    return f"{slug[: _DOCKER_TAG_MAX_LENGTH - 9]}-{short_digest(branch)}".lstrip("-")


def stage_of(branch: str, main_branch: str) -> str:
    """`main` for the main branch, `dev` for any other."""
    return MAIN_STAGE if branch == main_branch else DEV_STAGE


def docker_label(branch: str, main_branch: str) -> str:
    """The tag of the image built from `branch`: `main`, or the branch's slug."""
    if stage_of(branch, main_branch) == MAIN_STAGE:
        return MAIN_STAGE
    return branch_slug(branch)


def short_repository_name(repository_name: str, marker: str) -> str:
    """`{org}-{team}-flows-{name}` gives `{name}`; any other name is kept whole."""
    _, found, short = repository_name.partition(marker)
    return short if found and short else repository_name


def relative_storage_path(repository_name: str, stage: str, slug: str) -> str:
    """Where below the storage root a branch's copy of flows/ lives."""
    if stage == MAIN_STAGE:
        return f"main/{repository_name}"
    return f"{dev_branches_path(repository_name)}/{slug}"


def dev_branches_path(repository_name: str) -> str:
    """Where below the storage root the dev branches' folders live, one per slug."""
    return f"dev/{repository_name}"


def deployment_name_prefix(short_name: str, slug: str) -> str:
    """What every deployment name of one branch of one repository starts with."""
    return f"{short_name}{NAME_SEPARATOR}{slug}{NAME_SEPARATOR}"


def branch_prefix_of(deployment_name: str) -> str:
    """`{short} | {slug} | ` of a deployment name `{short} | {slug} | {module}`."""
    return deployment_name.rsplit(NAME_SEPARATOR, 1)[0] + NAME_SEPARATOR


def branch_slug_of(deployment_name: str) -> str:
    """`{slug}` of a deployment name `{short} | {slug} | {module}`."""
    return deployment_name.split(NAME_SEPARATOR)[1]


def docker_registry(configured: str, origin_url: str | None) -> str:
    """The configured registry, else GitHub's container registry of origin's owner."""
    if configured:
        return configured.rstrip("/")
    match = _GITHUB_OWNER.search(origin_url or "")
    return f"ghcr.io/{match.group(1).lower()}" if match else "localhost:5000"


def image_tag(docker_label: str | None, stage: str) -> str:
    """The image tag to run on: `main` unless a dev deploy names another one."""
    if docker_label is None:
        return MAIN_STAGE
    if stage == MAIN_STAGE:
        raise UserError(
            "--docker-label is refused on main: main only runs the main image"
        )
    tag = branch_slug(docker_label)
    if not _DOCKER_TAG.match(tag):
        raise UserError(f"--docker-label {docker_label!r} is not a usable image tag")
    return tag


def pointer_block_name(relative_storage: str) -> str:
    """A Prefect block name (lowercase, digits, dashes) unique to one storage path."""
    readable = re.sub(r"[^a-z0-9]+", "-", relative_storage.lower()).strip("-")
    return f"flows-{readable[:80]}-{short_digest(relative_storage)}"
