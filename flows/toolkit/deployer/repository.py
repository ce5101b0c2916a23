"""What git says about the checkout a deploy starts from, and the guard of main."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from toolkit.errors import UserError
from toolkit.git import git_text, git_text_or_empty
from toolkit.settings import Settings
from toolkit.deployer.naming import Repository


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
    branch = git_text_or_empty(cwd, "symbolic-ref", "--short", "-q", "HEAD")
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
    inside = git_text_or_empty(path, "rev-parse", "--is-inside-work-tree")
    if inside != "true":
        raise UserError(
            f"{path} is not inside a git repository: the branch decides how a flow "
            "is deployed (git init, or clone the repository)"
        )
    top_level = Path(git_text(path, "rev-parse", "--show-toplevel"))
    commit = git_text_or_empty(path, "rev-parse", "--verify", "-q", "HEAD")
    if not commit:
        raise UserError("the repository has no commit yet: commit your flows first")
    origin_url = git_text_or_empty(path, "remote", "get-url", "origin") or None
    return Repository(
        top_level=top_level,
        name=_repository_name(top_level, origin_url, settings, environ),
        branch=_current_branch(path, environ),
        commit=commit,
        origin_url=origin_url,
    )


def guard_main(repository: Repository) -> None:
    """Refuse to deploy main from anything but a clean copy of origin's main: what
    runs for real is what was reviewed and pushed."""
    where = repository.top_level
    changed = git_text(where, "status", "--porcelain", "--untracked-files=no")
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
    remote_line = git_text(
        where, "ls-remote", "--heads", "origin", f"refs/heads/{repository.branch}"
    )
    remote_commit = remote_line.split()[0] if remote_line else ""
    if remote_commit != repository.commit:
        found = remote_commit[:12] or "no such branch"
        raise UserError(
            f"refusing to deploy {repository.branch}: HEAD {repository.commit[:12]} is "
            f"not origin/{repository.branch} ({found}); push or pull first"
        )
