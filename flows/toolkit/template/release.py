"""`release`: record a release of the template and tag it.

The record (release_record.py) lists every template file's checksum, so that an
upgrade can tell a file the team changed from one the release changed. Standard
library, git and the runtime's errors only: this runs in CI before anything else is
installed.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import UserError
from toolkit.git import git_succeeds, git_text
from toolkit.template.ownership import (
    open_repository,
    read_file,
    read_ownership,
)
from toolkit.template.release_record import (
    CHANGELOG_FILE,
    RECORD_FILE,
    changelog_entries,
    parse_version,
    read_record,
    record_text,
    template_checksums,
)


def cut_release(top_level: Path, version: str) -> None:
    """Record the template files' checksums as `version`, commit and tag it."""
    top_level = open_repository(top_level)
    _check_release_allowed(top_level, version)
    ownership = read_ownership(top_level)
    record_path = top_level / RECORD_FILE
    before = read_file(record_path)
    head = git_text(top_level, "rev-parse", "HEAD", what="cannot read HEAD").strip()
    checksums = template_checksums(top_level, ownership)
    record_path.write_text(
        record_text(version, _own_url(top_level), checksums), encoding="utf-8"
    )
    try:
        git_text(top_level, "add", "--", RECORD_FILE, what="cannot stage the record")
        git_text(
            top_level,
            "commit",
            "-q",
            "-m",
            f"Release {version}",
            "--",
            RECORD_FILE,
            what=f"cannot commit {version}",
        )
        git_text(
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
    status = git_text(top_level, "status", "--porcelain", what="cannot read git status")
    if status.strip():
        raise UserError(
            "the working tree has uncommitted changes: commit or remove them first"
        )


def _has_ref(top_level: Path, ref: str) -> bool:
    return git_succeeds(top_level, "rev-parse", "-q", "--verify", ref)


def _own_url(top_level: Path) -> str:
    try:
        url = git_text(top_level, "remote", "get-url", "origin", what="").strip()
    except UserError:
        url = ""
    return url or str(top_level)


def _undo_release(
    top_level: Path, head: str, record_path: Path, before: bytes | None
) -> None:
    """Take back the commit (if made) and the record: a failed release leaves no trace."""
    # A clean tree was required, so HEAD's index is exactly what to go back to.
    git_text(top_level, "reset", "-q", head, what="cannot undo the release commit")
    if before is None:
        record_path.unlink(missing_ok=True)
    else:
        record_path.write_bytes(before)
