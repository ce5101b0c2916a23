"""`upgrade`: replace a team repository's template files with a newer release's.

All or nothing (file_changes.py): the team's files stay byte for byte as they were,
and a template file the team changed stops the upgrade unless --force. Standard
library, git and the runtime's errors only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import UserError
from toolkit.template.file_changes import apply_all_or_nothing, git_mode
from toolkit.template.ownership import (
    Ownership,
    open_repository,
    read_file,
    read_ownership,
)
from toolkit.template.release_record import (
    RECORD_FILE,
    Release,
    TemplateFile,
    changelog_between,
    fetch_release,
    parse_version,
    read_record,
    record_text,
    template_checksums,
)


@dataclass
class _Plan:
    """The writes and removals an upgrade makes."""

    writes: dict[str, TemplateFile] = field(default_factory=dict)
    removals: list[str] = field(default_factory=list)
    replaced: int = 0
    added: int = 0


def upgrade(top_level: Path, source: str | None, tag: str | None, force: bool) -> None:
    """Replace the template's files with those of a newer release; the team's stay."""
    top_level = open_repository(top_level)
    record = read_record(top_level)
    if record is None and not force:
        raise UserError(
            f"{RECORD_FILE} is missing, so the release this repository is at is unknown: "
            "copy it from that release, or pass --force to take the new one whole"
        )
    source = _resolve_source(source, record)
    with tempfile.TemporaryDirectory(prefix="template-upgrade-") as scratch:
        release = fetch_release(source, tag, Path(scratch))
    old_version = record["version"] if record else None
    _check_versions(old_version, release)
    old_files = record["files"] if record else {}
    if not force:
        _refuse_local_changes(top_level, old_files, release, old_version)
    plan = _plan_upgrade(top_level, old_files, release)
    plan.writes[RECORD_FILE] = TemplateFile(
        record_text(release.version, source, release.checksums()).encode(),
        "100644",
    )
    apply_all_or_nothing(top_level, plan.writes, plan.removals)
    print(
        f"upgraded the template from {old_version or '(no record)'} to "
        f"{release.version}: {plan.replaced} files replaced, {plan.added} added, "
        f"{len(plan.removals)} removed"
    )
    _lock_again(top_level)
    notes = changelog_between(release.changelog, old_version, release.version)
    if notes:
        print(f"\n{notes}")


# The release's own lock tool (the template's tools/), which knows what each of the
# team's locks is made from.
LOCK_TOOL = "tools/locks.py"
LOCK_SECONDS = 900


def _lock_again(top_level: Path) -> None:
    """Make the team's locks again when the new release's requirements outdate them,
    keeping every pin it can, and print the versions that moved. A lock that cannot
    be made leaves the upgrade in place: `make test` names the stale lock until
    `make lock` succeeds."""
    tool = top_level / LOCK_TOOL
    if not tool.is_file():
        return

    def run(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(tool), *arguments],
            cwd=top_level,
            capture_output=True,
            text=True,
            timeout=LOCK_SECONDS,
            check=False,
        )

    stale = run("check")
    if stale.returncode == 0:
        return
    reason = (
        stale.stderr.strip().removeprefix("error: ").removesuffix(": run `make lock`")
    )
    print(f"making the locks again: {reason}")
    made = run("write")
    print(made.stdout, end="")
    if made.returncode != 0:
        print(
            f"warning: {made.stderr.strip().removeprefix('error: ')}; "
            "fix the requirements, then run `make lock`"
        )


def _resolve_source(source: str | None, record: dict | None) -> str:
    if not source:
        source = (record or {}).get("template_url") or ""
        if not source:
            raise UserError(
                f"{RECORD_FILE} records no template URL: "
                "pass --from URL (the template repository)"
            )
    if source.startswith("-"):
        raise UserError(f"--from {source}: a URL or path cannot start with '-'")
    local = Path(source).expanduser()
    # A relative path must keep meaning the same folder once git runs elsewhere.
    return str(local.resolve()) if local.exists() else source


def _check_versions(old_version: str | None, release: Release) -> None:
    if old_version is None:
        return
    old, new = parse_version(old_version), parse_version(release.version)
    if new == old:
        raise UserError(f"already at {old_version}: nothing to upgrade")
    if new < old:
        raise UserError(
            f"{release.tag} is {release.version}, older than this repository's "
            f"{old_version}: no downgrades; pass a newer --to"
        )


def _refuse_local_changes(
    top_level: Path, old_files: dict, release: Release, old_version: str | None
) -> None:
    """Stop when an upgrade would overwrite or drop work done in this team repository."""
    ownership = _current_ownership(top_level, release)
    current = template_checksums(top_level, ownership)
    changed = sorted(
        path
        for path in set(old_files) | set(current)
        if old_files.get(path) != current.get(path)
    )
    taken = sorted(
        path
        for path, file in release.files.items()
        if path not in old_files
        and path not in current
        and path != RECORD_FILE
        and read_file(top_level / path) not in (None, file.data)
    )
    problems = []
    if changed:
        problems.append(
            f"template files changed here since {old_version}: {_listing(changed)}; "
            "commit them elsewhere or pass --force"
        )
    if taken:
        problems.append(
            f"files of the team that {release.version} makes the template's: "
            f"{_listing(taken)}; rename them or pass --force"
        )
    if problems:
        raise UserError("; ".join(problems))


def _current_ownership(top_level: Path, release: Release) -> Ownership:
    try:
        return read_ownership(top_level)
    except UserError:
        return release.ownership  # its loss is reported as a deleted template file


def _listing(paths: list[str], shown: int = 10) -> str:
    more = len(paths) - shown
    return ", ".join(paths[:shown]) + (f" and {more} more" if more > 0 else "")


def _plan_upgrade(top_level: Path, old_files: dict, release: Release) -> _Plan:
    plan = _Plan()
    for path, file in sorted(release.files.items()):
        if path == RECORD_FILE:
            continue
        target = top_level / path
        if not os.path.lexists(target):
            plan.added += 1
        elif git_mode(target) != file.mode or read_file(target) != file.data:
            plan.replaced += 1
        else:
            continue
        plan.writes[path] = file
    for path in sorted(old_files):
        if path in release.files or release.ownership.owner_of(path) == "team":
            continue
        if os.path.lexists(top_level / path):
            plan.removals.append(path)
    return plan
