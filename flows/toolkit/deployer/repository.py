"""What git says about the checkout a deploy starts from, and the production guard."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from toolkit.deployer.errors import UserError
from toolkit.deployer.settings import Settings

GIT_TIMEOUT_SECONDS = 60
# Prefect refuses these in a deployment name; Docker tags and folder names are stricter
# still, so a branch is reduced to the characters all three accept.
_UNSAFE_BRANCH_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")
_DOCKER_TAG_MAX_LENGTH = 128


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


def run_git(arguments: list[str], cwd: Path, check: bool = True) -> str:
    """Run git and return its stripped stdout; a failure is a UserError."""
    try:
        completed = subprocess.run(
            ["git", *arguments],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            check=False,
        )
    except FileNotFoundError as error:
        raise UserError("git is not installed or not on PATH") from error
    except subprocess.TimeoutExpired as error:
        raise UserError(
            f"`git {' '.join(arguments)}` took more than {GIT_TIMEOUT_SECONDS} s"
        ) from error
    if check and completed.returncode != 0:
        first_line = (completed.stderr.strip().splitlines() or ["failed"])[0]
        raise UserError(f"`git {' '.join(arguments)}`: {first_line}")
    return completed.stdout.strip() if completed.returncode == 0 else ""


def branch_slug(branch: str) -> str:
    """A readable, collision-free form of a branch name.

    A name made only of letters, digits, `_`, `.` and `-` is kept as it is; any other
    name has its runs of other characters replaced by `-` and gains a short hash of the
    original, so `feature/x-1` and `feature-x-1` never share a deployment or a copy.
    """
    slug = _UNSAFE_BRANCH_CHARACTERS.sub("-", branch).strip("-.")
    if slug == branch and len(branch) <= _DOCKER_TAG_MAX_LENGTH:
        return branch
    digest = hashlib.sha256(branch.encode()).hexdigest()[:8]
    return f"{slug[: _DOCKER_TAG_MAX_LENGTH - 9]}-{digest}".lstrip("-")


def stage_of(branch: str, settings: Settings) -> str:
    """`main` for the production branch, `dev` for any other."""
    return "main" if branch == settings.main_branch else "dev"


def docker_label(branch: str, settings: Settings) -> str:
    """The tag of the image built from `branch`: `main`, or the branch's slug."""
    return "main" if stage_of(branch, settings) == "main" else branch_slug(branch)


def _repository_name(
    top_level: Path, origin_url: str | None, settings: Settings, environ: Mapping
) -> str:
    if settings.repo_name:
        return settings.repo_name
    if environ.get("GITHUB_REPOSITORY"):
        return environ["GITHUB_REPOSITORY"].rsplit("/", 1)[-1]
    # The last path part of any URL form: https://host/o/r.git, git@host:o/r, /a/r/.
    parts = [p for p in re.split(r"[/:\\]", origin_url or "") if p not in ("", ".")]
    name = parts[-1].removesuffix(".git") if parts else ""
    return name or top_level.name


def _current_branch(cwd: Path, environ: Mapping) -> str:
    # In GitHub Actions the checkout is often a detached merge commit; the branch the
    # run is about is in the environment instead.
    if environ.get("GITHUB_ACTIONS") == "true":
        for variable in ("GITHUB_HEAD_REF", "GITHUB_REF_NAME"):
            if environ.get(variable):
                return environ[variable]
    branch = run_git(["symbolic-ref", "--short", "-q", "HEAD"], cwd, check=False)
    if not branch:
        raise UserError(
            "HEAD is detached: check out a branch (git switch <branch>) to deploy"
        )
    return branch


def read_repository(
    path: Path, settings: Settings, environ: Mapping | None = None
) -> Repository:
    """Read the repository that holds `path`."""
    environ = os.environ if environ is None else environ
    inside = run_git(["rev-parse", "--is-inside-work-tree"], path, check=False)
    if inside != "true":
        raise UserError(
            f"{path} is not inside a git repository: the branch decides how a flow "
            "is deployed (git init, or clone the repository)"
        )
    top_level = Path(run_git(["rev-parse", "--show-toplevel"], path))
    commit = run_git(["rev-parse", "--verify", "-q", "HEAD"], path, check=False)
    if not commit:
        raise UserError("the repository has no commit yet: commit your flows first")
    origin_url = run_git(["remote", "get-url", "origin"], path, check=False) or None
    return Repository(
        top_level=top_level,
        name=_repository_name(top_level, origin_url, settings, environ),
        branch=_current_branch(path, environ),
        commit=commit,
        origin_url=origin_url,
    )


def guard_production(repository: Repository) -> None:
    """Refuse to deploy production from anything but a clean copy of origin's main."""
    where = repository.top_level
    changed = run_git(["status", "--porcelain", "--untracked-files=no"], where)
    if changed:
        paths = ", ".join(line[3:] for line in changed.splitlines()[:3])
        raise UserError(
            f"refusing to deploy {repository.branch}: tracked files have uncommitted "
            f"changes ({paths}); commit and push them, or stash them"
        )
    if repository.origin_url is None:
        raise UserError(
            f"refusing to deploy {repository.branch}: there is no remote named origin, "
            "so nothing proves this commit was reviewed and pushed"
        )
    remote_line = run_git(
        ["ls-remote", "--heads", "origin", f"refs/heads/{repository.branch}"], where
    )
    remote_commit = remote_line.split()[0] if remote_line else ""
    if remote_commit != repository.commit:
        found = remote_commit[:12] or "no such branch"
        raise UserError(
            f"refusing to deploy {repository.branch}: HEAD {repository.commit[:12]} is "
            f"not origin/{repository.branch} ({found}); push or pull first"
        )
