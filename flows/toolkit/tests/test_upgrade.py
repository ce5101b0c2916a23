"""`release`, `upgrade` and `template-changed`, end to end with real git repositories.

A template repository is built from this repository's files and released twice
(v1.0.0, then v2.0.0 with a changed, an added and a removed file); a team repository is made from
a release as "Use this template" makes one, with the team's own changes, and upgraded.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.template.ownership import PATHS_FILE, Ownership, read_ownership
from toolkit.template.release_record import CHANGELOG_FILE, RECORD_FILE

REPOSITORY_DIR = Path(__file__).resolve().parents[3]
IDENTITY = {
    "GIT_AUTHOR_NAME": "Release Tester",
    "GIT_AUTHOR_EMAIL": "release@example.invalid",
    "GIT_COMMITTER_NAME": "Release Tester",
    "GIT_COMMITTER_EMAIL": "release@example.invalid",
}
V1_NOTE = "- The first release of the test template."
V2_NOTE = "- The second release: new_module.py, no bench/."
NEW_MODULE = "flows/toolkit/new_module.py"
CHANGED_MODULE = "flows/toolkit/cli/__init__.py"
MOVED_TO_TEAM = "image/requirements-template.txt"


def environment() -> dict[str, str]:
    """This process's environment, a git identity, no bytecode files in the repos."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")
    }
    return {**env, **IDENTITY, "PYTHONDONTWRITEBYTECODE": "1"}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo`; fail the test when git fails."""
    completed = subprocess.run(
        ["git", *args],
        cwd=repo,
        env=environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


def run_util(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """`python3 flows/util.py ARGS` in `repo`, as a person runs it."""
    return subprocess.run(
        [sys.executable, "flows/util.py", *args],
        cwd=repo,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2 and one line on stderr that holds every fragment."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(repo: Path) -> dict[str, tuple[str, bool]]:
    """path -> (sha256, executable) of every file outside .git."""
    files = {}
    for path in repo.rglob("*"):
        relative = path.relative_to(repo)
        if relative.parts[0] == ".git" or path.is_dir():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        files[relative.as_posix()] = (digest, os.access(path, os.X_OK))
    return files


def copy_repository_files(destination: Path) -> None:
    """This repository's files (tracked or not ignored) as they are on disk now.

    The real release record and changelog are left out: the test writes its own.
    """
    listing = git(REPOSITORY_DIR, "ls-files", "-z", "-c", "-o", "--exclude-standard")
    for name in sorted(set(filter(None, listing.split("\0")))):
        source = REPOSITORY_DIR / name
        if name in (RECORD_FILE, CHANGELOG_FILE) or not (
            source.is_file() or source.is_symlink()
        ):
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def write_changelog(repo: Path, *entries: str) -> None:
    """A changelog with the given entries, newest first."""
    text = "# Changelog\n\n" + "\n\n".join(entries) + "\n"
    (repo / CHANGELOG_FILE).write_text(text, encoding="utf-8")


def released_template(root: Path) -> Path:
    """A template repository at v1.0.0, released through the command line."""
    template = root / "template"
    template.mkdir(parents=True)
    copy_repository_files(template)
    write_changelog(template, f"## v1.0.0 (2026-01-01)\n\n{V1_NOTE}")
    git(template, "init", "-q", "-b", "main")
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "The template")
    result = run_util(template, "release", "v1.0.0")
    assert result.returncode == 0, result.stderr
    return template


def release_v2(template: Path) -> None:
    """Change, add and remove template files, hand one to the team, release v2.0.0."""
    with open(template / CHANGED_MODULE, "a", encoding="utf-8") as module:
        module.write("\n# v2 of the test template\n")
    (template / NEW_MODULE).write_text('"""New in v2."""\n', encoding="utf-8")
    (template / NEW_MODULE).chmod(0o755)
    git(template, "rm", "-q", "-r", "bench", MOVED_TO_TEAM)
    paths = template / PATHS_FILE
    lines = paths.read_text(encoding="utf-8").splitlines()
    assert MOVED_TO_TEAM in lines
    lines.remove(MOVED_TO_TEAM)
    paths.write_text("\n".join([*lines, "[team]", MOVED_TO_TEAM, ""]), "utf-8")
    write_changelog(
        template,
        f"## v2.0.0 (2026-02-01)\n\n{V2_NOTE}",
        f"## v1.0.0 (2026-01-01)\n\n{V1_NOTE}",
    )
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "Toward v2")
    result = run_util(template, "release", "v2.0.0")
    assert result.returncode == 0, result.stderr


@pytest.fixture
def template(tmp_path) -> Path:
    """Template releases v1.0.0 and v2.0.0, and v0.9.0 on a commit with no record."""
    template = released_template(tmp_path / "releases")
    git(template, "tag", "v0.9.0", "HEAD~1")
    release_v2(template)
    return template


def make_copy(template: Path, tag: str, root: Path) -> Path:
    """A team's repository made from `tag`: one fresh commit, then the team's work."""
    copy = root / "copy"
    git(root, "clone", "-q", "--branch", tag, str(template), str(copy))
    shutil.rmtree(copy / ".git")
    git(copy, "init", "-q", "-b", "main")
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", f"Made from the template {tag}")
    (copy / "flows" / "example_flow.py").unlink()
    (copy / "flows" / "our_flow.py").write_text('"""Our flow."""\n', "utf-8")
    with open(copy / "README.md", "a", encoding="utf-8") as readme:
        readme.write("\nOur team's notes.\n")
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", "Our flow")
    return copy


def tag_snapshot(template: Path, tag: str, root: Path) -> dict[str, tuple[str, bool]]:
    """The files of the template at `tag`."""
    checkout = root / f"at-{tag}"
    git(root, "clone", "-q", "--branch", tag, str(template), str(checkout))
    return snapshot(checkout)


def test_upgrade_replaces_the_template_files_and_keeps_the_teams(template, tmp_path):
    """Template files become v2's byte for byte; every other file stays as it was."""
    copy = make_copy(template, "v1.0.0", tmp_path)
    before = snapshot(copy)
    v1 = tag_snapshot(template, "v1.0.0", tmp_path)
    v2 = tag_snapshot(template, "v2.0.0", tmp_path)
    ownership = Ownership.parse((template / PATHS_FILE).read_text())
    new_files = {path for path in v2 if ownership.owner_of(path) == "template"}
    removed = {path for path in v1 if path.startswith("bench/")}

    result = run_util(copy, "upgrade", "--from", str(template), "--to", "v2.0.0")

    assert result.returncode == 0, result.stderr
    after = snapshot(copy)
    assert set(after) == (set(before) - removed) | new_files
    assert not (copy / "bench").exists()
    for path in new_files - {RECORD_FILE}:
        assert after[path] == v2[path], path
    for path in set(after) - new_files:
        assert after[path] == before[path], path
    assert after[MOVED_TO_TEAM] == before[MOVED_TO_TEAM]
    assert after[NEW_MODULE][1], "the executable bit of the new file is kept"
    record = json.loads((copy / RECORD_FILE).read_text())
    assert record["version"] == "v2.0.0"
    assert record["template_url"] == str(template)
    assert record["files"] == json.loads(v2_record(template))["files"]
    assert result.stdout.startswith(
        "upgraded the template from v1.0.0 to v2.0.0: 3 files replaced, 1 added, "
        f"{len(removed)} removed\n"
    ), result.stdout
    assert V2_NOTE in result.stdout and V1_NOTE not in result.stdout
    assert git(copy, "status", "--porcelain")
    assert git(copy, "rev-list", "--count", "HEAD") == "2"


def test_upgrade_makes_the_locks_again_when_the_template_s_list_changed(tmp_path):
    """A release that adds a dev tool to requirements-dev.txt: the upgrade makes the
    team's locks again, prints the package that moved, and the locks are current."""
    template = released_template(tmp_path / "releases")
    copy = make_copy(template, "v1.0.0", tmp_path)
    with open(template / "requirements-dev.txt", "a", encoding="utf-8") as dev:
        dev.write("tomli-w>=1.0,<2\n")
    write_changelog(
        template,
        "## v1.1.0 (2026-03-01)\n\n- tomli-w for the tests.",
        f"## v1.0.0 (2026-01-01)\n\n{V1_NOTE}",
    )
    git(template, "commit", "-q", "-am", "A dev tool")
    assert run_util(template, "release", "v1.1.0").returncode == 0

    result = run_util(copy, "upgrade", "--from", str(template), "--to", "v1.1.0")

    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert "making the locks again: requirements-dev.txt changed after" in result.stdout
    assert "requirements-dev.lock: " in result.stdout
    assert "  tomli-w (new) -> 1." in result.stdout
    assert "image/requirements.lock: " in result.stdout
    checked = subprocess.run(
        [sys.executable, "tools/locks.py", "check"],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def v2_record(template: Path) -> str:
    """The release record v2.0.0 committed."""
    return git(template, "show", f"v2.0.0:{RECORD_FILE}")


def test_upgrade_defaults_to_the_recorded_template_and_its_newest_release(
    template, tmp_path
):
    """No --from, no --to: the URL release.json records, and the highest tag."""
    copy = make_copy(template, "v1.0.0", tmp_path)

    result = run_util(copy, "upgrade")

    assert result.returncode == 0, result.stderr
    assert "from v1.0.0 to v2.0.0" in result.stdout
    record = json.loads((copy / RECORD_FILE).read_text())
    assert (record["version"], record["template_url"]) == ("v2.0.0", str(template))


def test_changes_to_template_files_block_the_upgrade_unless_forced(template, tmp_path):
    """Modified, added and deleted template files are named; --force replaces them."""
    copy = make_copy(template, "v1.0.0", tmp_path)
    with open(copy / "Makefile", "a", encoding="utf-8") as makefile:
        makefile.write("\nour-target:\n\ttrue\n")
    (copy / "tools" / "ours.py").write_text("VALUE = 1\n", "utf-8")
    (copy / "pytest.ini").unlink()
    before = snapshot(copy)

    refused = run_util(copy, "upgrade", "--from", str(template))

    assert_user_error(refused, "Makefile", "tools/ours.py", "pytest.ini", "--force")
    assert snapshot(copy) == before
    forced = run_util(copy, "upgrade", "--from", str(template), "--force")
    assert forced.returncode == 0, forced.stderr
    v2 = tag_snapshot(template, "v2.0.0", tmp_path)
    assert snapshot(copy)["Makefile"] == v2["Makefile"]
    assert (copy / "pytest.ini").is_file()


def test_a_failed_write_puts_every_file_back(template, tmp_path):
    """A folder where v2 puts a file: the upgrade stops and undoes what it wrote."""
    copy = make_copy(template, "v1.0.0", tmp_path)
    in_the_way = copy / NEW_MODULE / "file.txt"
    in_the_way.parent.mkdir()
    in_the_way.write_text("a folder in the way\n", "utf-8")
    before = snapshot(copy)

    result = run_util(copy, "upgrade", "--from", str(template), "--force")

    assert_user_error(result, NEW_MODULE, "as it was")
    assert snapshot(copy) == before


def drop_recorded_url(copy: Path) -> None:
    """A record without the template's URL."""
    record = json.loads((copy / RECORD_FILE).read_text())
    del record["template_url"]
    (copy / RECORD_FILE).write_text(json.dumps(record))


def drop_record(copy: Path) -> None:
    """A copy made before releases were recorded."""
    (copy / RECORD_FILE).unlink()


UPGRADE_MISTAKES = {
    "unknown tag": ("v1.0.0", None, ["--to", "v9.9.9"], ["no tag v9.9.9", "--to"]),
    "not a repository": ("v1.0.0", None, ["--from", "{nowhere}"], ["check --from"]),
    "no recorded URL": ("v1.0.0", drop_recorded_url, [], ["pass --from"]),
    "no record": ("v1.0.0", drop_record, [], ["release.json is missing"]),
    "already there": ("v1.0.0", None, ["--to", "v1.0.0"], ["already at v1.0.0"]),
    "downgrade": ("v2.0.0", None, ["--to", "v1.0.0"], ["no downgrades"]),
    "not a release": ("v1.0.0", None, ["--to", "v0.9.0"], ["no flows/toolkit/rel"]),
}


@pytest.mark.parametrize("mistake", UPGRADE_MISTAKES, ids=list(UPGRADE_MISTAKES))
def test_upgrade_mistakes_change_nothing(template, tmp_path, mistake):
    """One line on stderr, exit 2, and every file of the copy as it was."""
    tag, prepare, args, fragments = UPGRADE_MISTAKES[mistake]
    copy = make_copy(template, tag, tmp_path)
    if prepare is not None:
        prepare(copy)
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    before = snapshot(copy)

    result = run_util(copy, "upgrade", *[arg.format(nowhere=nowhere) for arg in args])

    assert_user_error(result, *fragments)
    assert snapshot(copy) == before


def test_release_records_every_template_file(tmp_path):
    """release.json: version, URL and the checksum of each template file; tagged."""
    template = released_template(tmp_path)
    record = json.loads((template / RECORD_FILE).read_text())
    ownership = read_ownership(template)
    tracked = git(template, "ls-files").splitlines()
    expected = {
        path: hashlib.sha256((template / path).read_bytes()).hexdigest()
        for path in tracked
        if ownership.owner_of(path) == "template" and path != RECORD_FILE
    }
    assert record == {
        "version": "v1.0.0",
        "template_url": str(template),
        "files": expected,
    }
    text = (template / RECORD_FILE).read_text()
    assert text == json.dumps(record, indent=2, sort_keys=True) + "\n"
    assert git(template, "cat-file", "-t", "v1.0.0") == "tag"
    assert git(template, "log", "-1", "--format=%s") == "Release v1.0.0"
    assert git(template, "status", "--porcelain") == ""


def add_changelog_entry(template: Path) -> None:
    """A v1.1.0 entry, not committed."""
    write_changelog(template, "## v1.1.0\n\n- More.", f"## v1.0.0\n\n{V1_NOTE}")


def commit_entry_and_tag(template: Path) -> None:
    """The v1.1.0 entry committed, and a tag v1.1.0 made by hand."""
    add_changelog_entry(template)
    git(template, "commit", "-q", "-am", "v1.1.0 notes")
    git(template, "tag", "v1.1.0")


def refuse_commits(template: Path) -> None:
    """The v1.1.0 entry committed, and a pre-commit hook that fails."""
    add_changelog_entry(template)
    git(template, "commit", "-q", "-am", "v1.1.0 notes")
    hook = template / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n", "utf-8")
    hook.chmod(0o755)


def refuse_tags(template: Path) -> None:
    """The v1.1.0 entry committed, and tags that must be signed by a failing gpg."""
    add_changelog_entry(template)
    git(template, "commit", "-q", "-am", "v1.1.0 notes")
    git(template, "config", "tag.gpgSign", "true")
    git(template, "config", "gpg.program", "false")


RELEASE_MISTAKES = {
    "bad version": (None, "1.1", ["vX.Y.Z"]),
    "not newer": (None, "v0.5.0", ["not newer than the recorded v1.0.0"]),
    "no changelog entry": (None, "v1.1.0", ["write its CHANGELOG entry first"]),
    "dirty tree": (add_changelog_entry, "v1.1.0", ["uncommitted changes"]),
    "existing tag": (commit_entry_and_tag, "v1.1.0", ["tag v1.1.0 exists"]),
    "commit fails": (refuse_commits, "v1.1.0", ["cannot commit v1.1.0"]),
    "tag fails": (refuse_tags, "v1.1.0", ["cannot tag v1.1.0"]),
}


@pytest.mark.parametrize("mistake", RELEASE_MISTAKES, ids=list(RELEASE_MISTAKES))
def test_release_mistakes_change_nothing(tmp_path, mistake):
    """One line, exit 2; no commit, no tag, the record and the tree as they were."""
    prepare, version, fragments = RELEASE_MISTAKES[mistake]
    template = released_template(tmp_path)
    if prepare is not None:
        prepare(template)
    head, tags = git(template, "rev-parse", "HEAD"), git(template, "tag")
    status, before = git(template, "status", "--porcelain"), snapshot(template)

    result = run_util(template, "release", version)

    assert_user_error(result, *fragments)
    assert git(template, "rev-parse", "HEAD") == head
    assert git(template, "tag") == tags
    assert git(template, "status", "--porcelain") == status
    assert snapshot(template) == before


def test_template_changed_says_whether_a_template_path_changed(tmp_path):
    """changed=false for team files only; changed=true and the paths otherwise."""
    template = released_template(tmp_path)
    git(template, "switch", "-q", "-c", "feature")
    with open(template / "README.md", "a", encoding="utf-8") as readme:
        readme.write("\nMore notes.\n")
    git(template, "commit", "-q", "-am", "team file")

    team_only = run_util(template, "template-changed", "main")
    assert (team_only.returncode, team_only.stdout) == (0, "changed=false\n")

    git(template, "mv", "tools/services.py", "flows/services.py")
    git(template, "commit", "-q", "-m", "a template file moved to the team's")
    moved = run_util(template, "template-changed", "main")
    assert (moved.returncode, moved.stdout) == (0, "changed=true\n")
    assert moved.stderr.splitlines() == ["tools/services.py"]

    assert_user_error(run_util(template, "template-changed", "no-such-base"))
