"""The template's release commands: `release`, `upgrade` and `template-changed`.

`release` records a release of the template (release_record.py); `upgrade` replaces a
copy's template files with a newer release's, all or nothing, and leaves the team's
byte for byte as they were; `template-changed` tells CI whether a pull request touches
the template's files. Standard library and the git command only: this runs in CI
before anything else is installed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.deployer.errors import UserError
from toolkit.file_changes import apply_all_or_nothing, git_mode
from toolkit.ownership import (
    Ownership,
    git,
    git_succeeds,
    open_repository,
    read_file,
    read_ownership,
)
from toolkit.release_record import (
    CHANGELOG_FILE,
    RECORD_FILE,
    Release,
    TemplateFile,
    changelog_between,
    changelog_entries,
    fetch_release,
    parse_version,
    read_record,
    record_text,
    template_checksums,
)

# --- cut_release -----------------------------------------------------------------


def cut_release(top_level: Path, version: str) -> None:
    """Record the template files' checksums as `version`, commit and tag it."""
    top_level = open_repository(top_level)
    _check_release_allowed(top_level, version)
    ownership = read_ownership(top_level)
    record_path = top_level / RECORD_FILE
    before = read_file(record_path)
    head = git(top_level, "rev-parse", "HEAD", what="cannot read HEAD").strip()
    checksums = template_checksums(top_level, ownership)
    record_path.write_text(
        record_text(version, _own_url(top_level), checksums), encoding="utf-8"
    )
    try:
        git(top_level, "add", "--", RECORD_FILE, what="cannot stage the record")
        git(
            top_level,
            "commit",
            "-q",
            "-m",
            f"Release {version}",
            "--",
            RECORD_FILE,
            what=f"cannot commit {version}",
        )
        git(
            top_level,
            "tag",
            "-a",
            version,
            "-m",
            f"Release {version}",
            what=f"cannot tag {version}",
        )
    except UserError:
        _undo_release(top_level, head, record_path, before)
        raise
    print(
        f"released {version}: {len(checksums)} template files recorded in "
        f"{RECORD_FILE}; publish it with: git push origin HEAD {version}"
    )


def _check_release_allowed(top_level: Path, version: str) -> None:
    """Every reason to refuse a release, checked before anything changes."""
    wanted = parse_version(version)
    if not _has_ref(top_level, "HEAD"):
        raise UserError("the repository has no commit yet: commit the template first")
    record = read_record(top_level)
    if record is not None and wanted <= parse_version(record["version"]):
        raise UserError(
            f"{version} is not newer than the recorded {record['version']}: "
            "choose a higher version"
        )
    changelog = top_level / CHANGELOG_FILE
    text = changelog.read_text(encoding="utf-8") if changelog.is_file() else ""
    if version not in changelog_entries(text):
        raise UserError(
            f"{CHANGELOG_FILE} has no '## {version}' heading: "
            "write its CHANGELOG entry first"
        )
    if _has_ref(top_level, f"refs/tags/{version}"):
        raise UserError(f"tag {version} exists already: choose another version")
    status = git(top_level, "status", "--porcelain", what="cannot read git status")
    if status.strip():
        raise UserError(
            "the working tree has uncommitted changes: commit or remove them first"
        )


def _has_ref(top_level: Path, ref: str) -> bool:
    return git_succeeds(top_level, "rev-parse", "-q", "--verify", ref)


def _own_url(top_level: Path) -> str:
    try:
        url = git(top_level, "remote", "get-url", "origin", what="").strip()
    except UserError:
        url = ""
    return url or str(top_level)


def _undo_release(
    top_level: Path, head: str, record_path: Path, before: bytes | None
) -> None:
    """Take back the commit (if made) and the record: a failed release leaves no trace."""
    # A clean tree was required, so HEAD's index is exactly what to go back to.
    git(top_level, "reset", "-q", head, what="cannot undo the release commit")
    if before is None:
        record_path.unlink(missing_ok=True)
    else:
        record_path.write_bytes(before)


# --- upgrade ---------------------------------------------------------------------


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
            f"{RECORD_FILE} is missing, so the release this copy is at is unknown: "
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
    notes = changelog_between(release.changelog, old_version, release.version)
    if notes:
        print(f"\n{notes}")


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
            f"{release.tag} is {release.version}, older than this copy's "
            f"{old_version}: no downgrades; pass a newer --to"
        )


def _refuse_local_changes(
    top_level: Path, old_files: dict, release: Release, old_version: str | None
) -> None:
    """Stop when an upgrade would overwrite or drop work done in this copy."""
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


# --- template_changed ------------------------------------------------------------


def template_changed(top_level: Path, base: str) -> bool:
    """Whether a template path changed between `base` and HEAD (for PR checks)."""
    top_level = open_repository(top_level)
    if base.startswith("-"):
        raise UserError(f"{base} is not a commit: pass a commit, branch or tag")
    ownership = read_ownership(top_level)
    # Without renames a template file moved to a team path still counts as changed.
    arguments = ("diff", "--name-only", "--no-renames", "-z")
    try:
        output = git(top_level, *arguments, f"{base}...HEAD", what="")
    except UserError:
        output = git(
            top_level,
            *arguments,
            base,
            "HEAD",
            what=f"cannot compare {base} with HEAD; pass a commit this clone has",
        )
    changed = [
        path
        for path in filter(None, output.split("\0"))
        if ownership.owner_of(path) == "template"
    ]
    print(f"changed={'true' if changed else 'false'}")
    for path in changed:
        print(path, file=sys.stderr)
    return bool(changed)
