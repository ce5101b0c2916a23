"""A release of the template: its record, its changelog, and its files at a tag.

The record, flows/toolkit/release.json, holds the release's version, the template's
URL and the checksum of every template file, so an upgrade can tell whether a team repository
changed one. Standard library and the git command only: this runs in CI before
anything else is installed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from toolkit.errors import UserError
from toolkit.git import FETCH_TIMEOUT_SECONDS, git_text, run_git
from toolkit.template.ownership import (
    PATHS_FILE,
    Ownership,
    read_file,
    repository_files,
)

RECORD_FILE = "flows/toolkit/release.json"
CHANGELOG_FILE = "flows/toolkit/CHANGELOG.md"
VERSION_PATTERN = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
_CHANGELOG_HEADING = re.compile(r"^## (v\d+\.\d+\.\d+)(?:\s|$)")


# --- versions, record and changelog ------------------------------------------------


def parse_version(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a "vX.Y.Z" string."""
    match = VERSION_PATTERN.match(version)
    if match is None:
        raise UserError(f"{version!r} is not a release version: write it as vX.Y.Z")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def read_record(top_level: Path) -> dict | None:
    """The repository's release.json, or None when it has none."""
    try:
        text = (Path(top_level) / RECORD_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return _parse_record(text, RECORD_FILE)


def _parse_record(text: str, source: str) -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{source} is not valid JSON ({error.msg}, line {error.lineno}); "
            "restore it from the template's release"
        ) from error
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise UserError(
            f"{source} has no files; restore it from the template's release"
        )
    parse_version(str(record.get("version")))
    return record


def record_text(version: str, template_url: str, files: dict[str, str]) -> str:
    """release.json's text for a release with these file checksums."""
    record = {"version": version, "template_url": template_url, "files": files}
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def template_checksums(top_level: Path, ownership: Ownership) -> dict[str, str]:
    """The checksum of every template file of the repository but the record itself."""
    files = {}
    for path in repository_files(top_level):
        if ownership.owner_of(path) == "template":
            data = read_file(Path(top_level) / path)
            if data is not None:
                files[path] = data
    return _checksums(files)


def _checksums(files: Mapping[str, bytes]) -> dict[str, str]:
    # The record cannot hold its own checksum: writing it would change it.
    return {
        path: hashlib.sha256(data).hexdigest()
        for path, data in files.items()
        if path != RECORD_FILE
    }


def changelog_entries(text: str) -> dict[str, str]:
    """Each `## vX.Y.Z ...` entry of a changelog, heading and bullets, by version."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _CHANGELOG_HEADING.match(line)
        if match:
            current = entries.setdefault(match.group(1), [])
            current.append(line)
        elif line.startswith("#") and not line.startswith("###"):
            current = None
        elif current is not None:
            current.append(line)
    return {version: "\n".join(lines).strip() for version, lines in entries.items()}


def changelog_between(text: str, old_version: str | None, new_version: str) -> str:
    """The entries after `old_version` up to `new_version`, newest first."""
    low = parse_version(old_version) if old_version else (-1, -1, -1)
    high = parse_version(new_version)
    entries = [
        (parse_version(version), entry)
        for version, entry in changelog_entries(text).items()
        if low < parse_version(version) <= high
    ]
    return "\n\n".join(entry for _, entry in sorted(entries, reverse=True))


# --- a release at a tag ------------------------------------------------------------


@dataclass
class TemplateFile:
    """One file of a release: its bytes and git mode."""

    data: bytes
    mode: str


@dataclass
class Release:
    """What a release tag of the template holds."""

    tag: str
    version: str
    ownership: Ownership
    files: dict[str, TemplateFile]
    changelog: str = ""

    def checksums(self) -> dict[str, str]:
        """The checksum of every file of the release but its record."""
        return _checksums({path: file.data for path, file in self.files.items()})


def fetch_release(source: str, tag: str | None, scratch: Path) -> Release:
    """The files of the template at `tag` (default: the newest release tag)."""
    tag = _choose_tag(source, tag, scratch)
    repo = scratch / "template.git"
    git_text(
        scratch, "init", "-q", "--bare", str(repo), what="cannot make a scratch repo"
    )
    git_text(
        repo,
        "fetch",
        "-q",
        "--depth",
        "1",
        "--no-tags",
        source,
        f"refs/tags/{tag}:refs/tags/{tag}",
        what=f"cannot fetch {tag} from {source}",
        timeout=FETCH_TIMEOUT_SECONDS,
    )
    entries = _tree_entries(repo, tag)
    for required in (PATHS_FILE, RECORD_FILE):
        if required not in entries:
            raise UserError(
                f"{tag} of {source} has no {required}: it is not a release of "
                "this template; pass another --to"
            )
    first = _read_files(repo, entries, [PATHS_FILE, RECORD_FILE])
    ownership = Ownership.parse(_text(first[PATHS_FILE]), f"{PATHS_FILE} of {tag}")
    record = _parse_record(_text(first[RECORD_FILE]), f"{RECORD_FILE} of {tag}")
    paths = [path for path in entries if ownership.owner_of(path) == "template"]
    files = _read_files(repo, entries, paths)
    changelog = files.get(CHANGELOG_FILE)
    return Release(
        tag=tag,
        version=record["version"],
        ownership=ownership,
        files=files,
        changelog=_text(changelog) if changelog else "",
    )


def _text(file: TemplateFile) -> str:
    return file.data.decode("utf-8", "replace")


def _release_tags(source: str, scratch: Path) -> list[str]:
    output = git_text(
        scratch,
        "ls-remote",
        "--tags",
        source,
        what=f"cannot read the template at {source}; check --from",
    )
    names = {line.split("\t", 1)[-1] for line in output.splitlines() if "\t" in line}
    tags = {name.removeprefix("refs/tags/").removesuffix("^{}") for name in names}
    return sorted(tags)


def _choose_tag(source: str, tag: str | None, scratch: Path) -> str:
    tags = _release_tags(source, scratch)
    versions = [name for name in tags if VERSION_PATTERN.match(name)]
    if tag is None:
        if not versions:
            raise UserError(f"{source} has no vX.Y.Z release tag: pass --to TAG")
        return max(versions, key=parse_version)
    if tag not in tags:
        known = ", ".join(sorted(versions, key=parse_version)[-5:]) or "none"
        raise UserError(
            f"{source} has no tag {tag} (its newest releases: {known}); check --to"
        )
    return tag


def _tree_entries(repo: Path, tag: str) -> dict[str, tuple[str, str]]:
    """path -> (mode, blob id) of every file at the tag; submodules left out."""
    output = git_text(
        repo, "ls-tree", "-r", "-z", "--full-tree", tag, what=f"cannot read {tag}"
    )
    entries = {}
    for entry in filter(None, output.split("\0")):
        header, path = entry.split("\t", 1)
        mode, kind, blob = header.split()
        if kind == "blob":
            entries[path] = (mode, blob)
    return entries


def _read_files(
    repo: Path, entries: dict[str, tuple[str, str]], paths: list[str]
) -> dict[str, TemplateFile]:
    """The files at `paths`, their blobs read through one `git cat-file --batch`."""
    unique = list(dict.fromkeys(entries[path][1] for path in paths))
    stdin = "".join(f"{blob}\n" for blob in unique).encode()
    output = run_git(
        repo, "cat-file", "--batch", what="cannot read the release", stdin=stdin
    )
    blobs, position = {}, 0
    for blob in unique:
        header_end = output.index(b"\n", position)
        size = int(output[position:header_end].split()[2])
        blobs[blob] = output[header_end + 1 : header_end + 1 + size]
        position = header_end + 1 + size + 1  # the content ends with a newline
    return {
        path: TemplateFile(blobs[entries[path][1]], entries[path][0]) for path in paths
    }
