"""Template releases: who owns which file, the release record, and upgrading a copy.

A copy of the template ("Use this template") holds the template's files and the
team's; flows/toolkit/template-paths.txt says which are which. A release records the
checksum of every template file in flows/toolkit/release.json, so `upgrade` can tell
whether a copy changed a template file before it replaces the template's files with a
newer release's, leaving the team's byte for byte as they were.

Standard library and the git command only: this runs in CI before anything else is
installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.deployer.errors import UserError

PATHS_FILE = "flows/toolkit/template-paths.txt"
RECORD_FILE = "flows/toolkit/release.json"
CHANGELOG_FILE = "flows/toolkit/CHANGELOG.md"
VERSION_PATTERN = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
_CHANGELOG_HEADING = re.compile(r"^## (v\d+\.\d+\.\d+)(?:\s|$)")
_SECTIONS = {"[template]": "template", "[team]": "team"}
_EXECUTABLE_MODE = "100755"
_SYMLINK_MODE = "120000"


# --- ownership -------------------------------------------------------------------


@dataclass(frozen=True)
class Ownership:
    """The [template] and [team] lines of a template-paths.txt."""

    template: tuple[str, ...]
    team: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, source: str = PATHS_FILE) -> Ownership:
        """Read the lines of each section; anything outside a section is a mistake."""
        lines: dict[str, list[str]] = {"template": [], "team": []}
        section = None
        for number, raw_line in enumerate(text.splitlines(), start=1):
            line = raw_line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                section = _SECTIONS.get(line)
                if section is None:
                    raise UserError(
                        f"{source} line {number}: unknown section {line}; "
                        "use [template] or [team]"
                    )
            elif section is None:
                raise UserError(
                    f"{source} line {number}: {line} is in no section; "
                    "put it below [template] or [team]"
                )
            else:
                lines[section].append(line.removeprefix("./"))
        return cls(tuple(lines["template"]), tuple(lines["team"]))

    def owner_of(self, path: str) -> str | None:
        """ "template", "team", or None when no line names the path."""
        if any(_names(line, path) for line in self.template):
            return "template"
        if any(_names(line, path) for line in self.team):
            return "team"
        return None


def _names(line: str, path: str) -> bool:
    return path.startswith(line) if line.endswith("/") else path == line


def read_ownership(top_level: Path) -> Ownership:
    """The ownership a repository's own template-paths.txt declares."""
    path = Path(top_level) / PATHS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise UserError(
            f"{PATHS_FILE} is missing: restore it from the template's release"
        ) from error
    return Ownership.parse(text)


def repository_files(top_level: Path) -> list[str]:
    """Tracked files plus untracked ones git does not ignore, sorted."""
    output = _git(
        top_level,
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
        what="cannot list the files of the repository",
    )
    return sorted({path for path in output.split("\0") if path})


def unowned_files(top_level: Path) -> list[str]:
    """The repository's files that template-paths.txt gives to nobody."""
    ownership = read_ownership(top_level)
    return [
        path for path in repository_files(top_level) if ownership.owner_of(path) is None
    ]


# --- git and files ---------------------------------------------------------------


def _run_git(cwd: Path, args: list[str], what: str, stdin: bytes = b"") -> bytes:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False
        )
    except FileNotFoundError as error:
        raise UserError("git is not installed: install git and run again") from error
    if completed.returncode != 0:
        raise UserError(f"{what}: {_first_line(completed.stderr)}")
    return completed.stdout


def _git(cwd: Path, *args: str, what: str) -> str:
    return _run_git(cwd, list(args), what).decode("utf-8", "surrogateescape")


def _git_succeeds(cwd: Path, *args: str) -> bool:
    try:
        _git(cwd, *args, what="")
    except UserError:
        return False
    return True


def _first_line(stderr: bytes) -> str:
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return "git failed without saying why"


def _require_repository(top_level: Path) -> None:
    _git(
        top_level,
        "rev-parse",
        "--git-dir",
        what=f"{top_level} is not a git repository; run this in a clone of it",
    )


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_file(path: Path) -> bytes | None:
    """The bytes git would store for the file (a link's target), None if absent."""
    if path.is_symlink():
        return os.fsencode(os.readlink(path))
    if not path.is_file():
        return None
    return path.read_bytes()


def template_checksums(top_level: Path, ownership: Ownership) -> dict[str, str]:
    """The checksum of every template file of the repository but the record itself."""
    checksums = {}
    for path in repository_files(top_level):
        if path == RECORD_FILE or ownership.owner_of(path) != "template":
            continue
        data = _read_file(Path(top_level) / path)
        if data is not None:
            checksums[path] = _digest(data)
    return checksums


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


def _record_text(version: str, template_url: str, files: dict[str, str]) -> str:
    record = {"version": version, "template_url": template_url, "files": files}
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


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


# --- cut_release -----------------------------------------------------------------


def cut_release(top_level: Path, version: str) -> None:
    """Record the template files' checksums as `version`, commit and tag it."""
    top_level = Path(top_level).resolve()
    _require_repository(top_level)
    _check_release_allowed(top_level, version)
    ownership = read_ownership(top_level)
    record_path = top_level / RECORD_FILE
    before = _read_file(record_path)
    head = _git(top_level, "rev-parse", "HEAD", what="cannot read HEAD").strip()
    checksums = template_checksums(top_level, ownership)
    record_path.write_text(
        _record_text(version, _own_url(top_level), checksums), encoding="utf-8"
    )
    try:
        _git(top_level, "add", "--", RECORD_FILE, what="cannot stage the record")
        _git(
            top_level,
            "commit",
            "-q",
            "-m",
            f"Release {version}",
            "--",
            RECORD_FILE,
            what=f"cannot commit {version}",
        )
        _git(
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
    if not _git_succeeds(top_level, "rev-parse", "-q", "--verify", "HEAD"):
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
    if _git_succeeds(top_level, "rev-parse", "-q", "--verify", f"refs/tags/{version}"):
        raise UserError(f"tag {version} exists already: choose another version")
    status = _git(top_level, "status", "--porcelain", what="cannot read git status")
    if status.strip():
        raise UserError(
            "the working tree has uncommitted changes: commit or remove them first"
        )


def _own_url(top_level: Path) -> str:
    try:
        url = _git(top_level, "remote", "get-url", "origin", what="").strip()
    except UserError:
        url = ""
    return url or str(top_level)


def _undo_release(
    top_level: Path, head: str, record_path: Path, before: bytes | None
) -> None:
    """Take back the commit (if made) and the record: a failed release leaves no trace."""
    # A clean tree was required, so HEAD's index is exactly what to go back to.
    _git(top_level, "reset", "-q", head, what="cannot undo the release commit")
    if before is None:
        record_path.unlink(missing_ok=True)
    else:
        record_path.write_bytes(before)


# --- fetching a release ----------------------------------------------------------


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


def _release_tags(source: str, scratch: Path) -> list[str]:
    output = _git(
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


def fetch_release(source: str, tag: str | None, scratch: Path) -> Release:
    """The files of the template at `tag` (default: the newest release tag)."""
    tag = _choose_tag(source, tag, scratch)
    repo = scratch / "template.git"
    _git(scratch, "init", "-q", "--bare", str(repo), what="cannot make a scratch repo")
    _git(
        repo,
        "fetch",
        "-q",
        "--depth",
        "1",
        "--no-tags",
        source,
        f"refs/tags/{tag}:refs/tags/{tag}",
        what=f"cannot fetch {tag} from {source}",
    )
    entries = _tree_entries(repo, tag)
    for required in (PATHS_FILE, RECORD_FILE):
        if required not in entries:
            raise UserError(
                f"{tag} of {source} has no {required}: it is not a release of "
                "this template; pass another --to"
            )
    wanted = [PATHS_FILE, RECORD_FILE]
    first = _read_blobs(repo, [entries[path][1] for path in wanted])
    ownership = Ownership.parse(
        first[entries[PATHS_FILE][1]].decode("utf-8", "replace"),
        f"{PATHS_FILE} of {tag}",
    )
    record = _parse_record(
        first[entries[RECORD_FILE][1]].decode("utf-8", "replace"),
        f"{RECORD_FILE} of {tag}",
    )
    paths = [path for path in entries if ownership.owner_of(path) == "template"]
    blobs = _read_blobs(repo, [entries[path][1] for path in paths])
    files = {
        path: TemplateFile(blobs[entries[path][1]], entries[path][0]) for path in paths
    }
    changelog = files.get(CHANGELOG_FILE)
    return Release(
        tag=tag,
        version=record["version"],
        ownership=ownership,
        files=files,
        changelog=changelog.data.decode("utf-8", "replace") if changelog else "",
    )


def _tree_entries(repo: Path, tag: str) -> dict[str, tuple[str, str]]:
    """path -> (mode, blob id) of every file at the tag; submodules left out."""
    output = _git(
        repo, "ls-tree", "-r", "-z", "--full-tree", tag, what=f"cannot read {tag}"
    )
    entries = {}
    for entry in filter(None, output.split("\0")):
        header, path = entry.split("\t", 1)
        mode, kind, blob = header.split()
        if kind == "blob":
            entries[path] = (mode, blob)
    return entries


def _read_blobs(repo: Path, blob_ids: list[str]) -> dict[str, bytes]:
    """Many blobs through one `git cat-file --batch`."""
    unique = list(dict.fromkeys(blob_ids))
    stdin = "".join(f"{blob}\n" for blob in unique).encode()
    output = _run_git(repo, ["cat-file", "--batch"], "cannot read the release", stdin)
    blobs, position = {}, 0
    for blob in unique:
        header_end = output.index(b"\n", position)
        size = int(output[position:header_end].split()[2])
        blobs[blob] = output[header_end + 1 : header_end + 1 + size]
        position = header_end + 1 + size + 1  # the content ends with a newline
    return blobs


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
    top_level = Path(top_level).resolve()
    _require_repository(top_level)
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
        _record_text(release.version, source, _release_checksums(release)).encode(),
        "100644",
    )
    _apply(top_level, plan)
    print(
        f"upgraded the template from {old_version or '(no record)'} to "
        f"{release.version}: {plan.replaced} files replaced, {plan.added} added, "
        f"{len(plan.removals)} removed"
    )
    notes = _changelog_between(release.changelog, old_version, release.version)
    if notes:
        print(f"\n{notes}")


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


def _release_checksums(release: Release) -> dict[str, str]:
    return {
        path: _digest(file.data)
        for path, file in release.files.items()
        if path != RECORD_FILE
    }


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
        and _read_file(top_level / path) not in (None, file.data)
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
        elif not _same_file(target, file):
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


def _same_file(target: Path, file: TemplateFile) -> bool:
    if target.is_symlink() != (file.mode == _SYMLINK_MODE):
        return False
    if _read_file(target) != file.data:
        return False
    executable = bool(target.lstat().st_mode & stat.S_IXUSR)
    return target.is_symlink() or executable == (file.mode == _EXECUTABLE_MODE)


def _changelog_between(text: str, old_version: str | None, new_version: str) -> str:
    """The entries after `old_version` up to `new_version`, newest first."""
    low = parse_version(old_version) if old_version else (-1, -1, -1)
    high = parse_version(new_version)
    entries = [
        (parse_version(version), entry)
        for version, entry in changelog_entries(text).items()
        if low < parse_version(version) <= high
    ]
    return "\n\n".join(entry for _, entry in sorted(entries, reverse=True))


# --- applying, all or nothing ----------------------------------------------------


@dataclass
class _Journal:
    """What each touched path held before, to put it all back on failure."""

    top_level: Path
    backups: list[tuple[Path, TemplateFile | None]] = field(default_factory=list)
    made_folders: list[Path] = field(default_factory=list)

    def remember(self, target: Path) -> None:
        """Keep the path's bytes and mode before its first change."""
        if any(saved == target for saved, _ in self.backups):
            return
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(21, "a folder is in the way", str(target))
        data = _read_file(target)
        self.backups.append(
            (target, None if data is None else TemplateFile(data, _git_mode(target)))
        )

    def make_parents(self, target: Path) -> None:
        """Create the missing folders above the target, noting each."""
        missing = []
        for parent in target.parents:
            if parent.exists() or parent == self.top_level:
                break
            missing.append(parent)
        for folder in reversed(missing):
            folder.mkdir()
            self.made_folders.append(folder)

    def roll_back(self) -> None:
        """Put every remembered path back, newest change first."""
        for target, before in reversed(self.backups):
            if before is None:
                if target.is_symlink() or target.is_file():
                    target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_file(target, before)
        for folder in reversed(self.made_folders):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty or already gone: either way as it was


def _git_mode(target: Path) -> str:
    if target.is_symlink():
        return _SYMLINK_MODE
    return _EXECUTABLE_MODE if target.stat().st_mode & stat.S_IXUSR else "100644"


def _apply(top_level: Path, plan: _Plan) -> None:
    journal = _Journal(top_level)
    current = ""
    try:
        for current, file in plan.writes.items():
            target = top_level / current
            journal.remember(target)
            journal.make_parents(target)
            _write_file(target, file)
        for current in plan.removals:
            target = top_level / current
            journal.remember(target)
            target.unlink()
            _remove_empty_folders(top_level, target.parent)
    except OSError as error:
        try:
            journal.roll_back()
        except OSError as second:
            raise UserError(
                f"upgrade stopped at {current} ({error.strerror}) and could not put "
                f"everything back ({second}); restore with git checkout and git clean"
            ) from second
        raise UserError(
            f"upgrade stopped at {current} ({error.strerror or error}); every file "
            "is as it was: fix that and run it again"
        ) from error


def _write_file(target: Path, file: TemplateFile) -> None:
    """Write beside the target, then swap it in: no reader sees half a file."""
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        if file.mode == _SYMLINK_MODE:
            os.close(handle)
            os.unlink(temporary)
            os.symlink(os.fsdecode(file.data), temporary)
        else:
            with os.fdopen(handle, "wb") as stream:
                stream.write(file.data)
            executable = file.mode == _EXECUTABLE_MODE
            os.chmod(temporary, (0o777 if executable else 0o666) & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_empty_folders(top_level: Path, folder: Path) -> None:
    while folder != top_level and top_level in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty: the folder still holds something
        folder = folder.parent


# --- template_changed ------------------------------------------------------------


def template_changed(top_level: Path, base: str) -> bool:
    """Whether a template path changed between `base` and HEAD (for PR checks)."""
    top_level = Path(top_level).resolve()
    _require_repository(top_level)
    if base.startswith("-"):
        raise UserError(f"{base} is not a commit: pass a commit, branch or tag")
    ownership = read_ownership(top_level)
    # Without renames a template file moved to a team path still counts as changed.
    arguments = ("diff", "--name-only", "--no-renames", "-z")
    try:
        output = _git(top_level, *arguments, f"{base}...HEAD", what="")
    except UserError:
        output = _git(
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
