"""A team repository made from the real v1.2.3 release, upgraded to this checkout.

v1.2.3 is the last release before the toolkit was split into layers (cli/, deployer/,
template/, docs/): most of its modules moved. A scratch template repository holds the
real v1.2.3 release and, released as a test version, the files of this checkout; a
team repository made from v1.2.3, with the v1.2.3 guide's first flow, upgrades with
its own v1.2.3 code and must then pass `make test` as its CI runs it.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_first_flow import guide_command, guide_files
from test_upgrade import (
    REPOSITORY_DIR,
    copy_repository_files,
    environment,
    git,
    make_copy,
    run_util,
    snapshot,
    tag_snapshot,
)
from toolkit.template.ownership import PATHS_FILE, Ownership
from toolkit.template.release_record import CHANGELOG_FILE, RECORD_FILE

OLD = "v1.2.3"
# Newer than v1.2.3 and far above any real next release, so no real tag collides.
NEW = "v1.99.0"
NEW_NOTE = "- This checkout's toolkit, in layers (a release made by a test)."
OLD_GUIDE = "flows/toolkit/GUIDE.md"
FIRST_FLOW = "## Your first flow"
MAKE_TEST_SECONDS = 600
GONE = (
    "flows/toolkit/cli.py",
    "flows/toolkit/deployer/commands.py",
    "flows/toolkit/release.py",
    OLD_GUIDE,
)
PRESENT = (
    "flows/toolkit/deployer/deploy.py",
    "flows/toolkit/template/upgrade.py",
    "flows/toolkit/cli/__init__.py",
)


def has_tag(repo: Path, tag: str) -> bool:
    """Whether the repository has the tag."""
    return bool(git(repo, "tag", "--list", tag))


def old_release_commit() -> str:
    """This repository's commit "Release v1.2.3" (a clone may have no tags), else the
    tag's; a repository made from the template has neither: the test is skipped."""
    found = git(REPOSITORY_DIR, "log", "-1", "--format=%H", f"--grep=^Release {OLD}$")
    if not found and has_tag(REPOSITORY_DIR, OLD):
        found = git(REPOSITORY_DIR, "rev-parse", "--verify", f"{OLD}^{{commit}}")
    if not found:
        if git(REPOSITORY_DIR, "rev-parse", "--is-shallow-repository") == "true":
            pytest.fail(f"a shallow clone has no {OLD}: fetch the whole history")
        pytest.skip(f"no {OLD} in this history: a repository made from the template")
    return found


def replace_tree_with_this_checkout(template: Path) -> None:
    """This checkout's files as they are on disk, none of those deleted since; the
    release record stays v1.2.3's and the changelog gains an entry for NEW."""
    record = (template / RECORD_FILE).read_bytes()
    for child in template.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    copy_repository_files(template)
    (template / RECORD_FILE).write_bytes(record)
    text = (REPOSITORY_DIR / CHANGELOG_FILE).read_text(encoding="utf-8")
    head, entries = text.split("\n## ", 1)
    new_entry = f"## {NEW} (2026-12-01)\n\n{NEW_NOTE}\n"
    (template / CHANGELOG_FILE).write_text(
        f"{head}\n{new_entry}\n## {entries}", encoding="utf-8"
    )


def released_template(root: Path) -> Path:
    """A clone of this repository with the tag v1.2.3 and a release NEW of this
    checkout, made with this checkout's `release`."""
    commit = old_release_commit()
    template = root / "template"
    git(root, "clone", "-q", str(REPOSITORY_DIR), str(template))
    # The test release records the scratch repository, never this one, as its URL.
    git(template, "remote", "remove", "origin")
    if not has_tag(template, OLD):
        git(template, "tag", OLD, commit)
    git(template, "switch", "-q", "-c", "this-checkout")
    replace_tree_with_this_checkout(template)
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "This checkout")
    released = run_util(template, "release", NEW)
    assert released.returncode == 0, released.stderr
    return template


def write_the_first_flow(copy: Path) -> None:
    """The team's work: the v1.2.3 guide's first flow, its query and its test."""
    guide = (copy / OLD_GUIDE).read_text(encoding="utf-8")
    section = guide.split(FIRST_FLOW, 1)[1].split("\n## ", 1)[0]
    _, subcommand, *arguments = guide_command(section, "git rm ")
    # make_copy has deleted the example flow already.
    kept = [arg for arg in arguments if arg.startswith("-") or (copy / arg).exists()]
    git(copy, subcommand, *kept)
    for path, text in guide_files(section).items():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        (copy / path).write_text(text, encoding="utf-8")
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", "Our first flow, as the v1.2.3 guide has it")


def ownership_at(template: Path, tag: str) -> Ownership:
    """The template paths file of a release."""
    return Ownership.parse(git(template, "show", f"{tag}:{PATHS_FILE}"))


def record_at(template: Path, tag: str) -> dict:
    """The release record of a release."""
    return json.loads(git(template, "show", f"{tag}:{RECORD_FILE}"))


def team_files(template: Path, copy: Path) -> dict[str, tuple[str, bool]]:
    """The team's files of the copy, as v1.2.3's template paths file tells them."""
    ownership = ownership_at(template, OLD)
    return {
        path: value
        for path, value in snapshot(copy).items()
        if ownership.owner_of(path) == "team"
    }


def assert_holds_the_new_release(copy: Path, template: Path, root: Path) -> None:
    """Each template file of NEW, byte for byte and mode; NEW's record."""
    released = tag_snapshot(template, NEW, root)
    new_files = record_at(template, NEW)["files"]
    files = snapshot(copy)
    different = [path for path in new_files if files.get(path) != released[path]]
    assert not different, f"not as in {NEW}: {different}"
    record = json.loads((copy / RECORD_FILE).read_text(encoding="utf-8"))
    assert record["version"] == NEW
    assert record["files"] == new_files


def assert_nothing_else_is_left(copy: Path, template: Path, team: dict) -> None:
    """The old release's files NEW lacks are gone, and with them their folders."""
    old_files = set(record_at(template, OLD)["files"])
    new_files = set(record_at(template, NEW)["files"])
    ownership = ownership_at(template, NEW)
    handed_over = {path for path in old_files if ownership.owner_of(path) == "team"}
    expected = new_files | {RECORD_FILE} | set(team) | handed_over
    files = set(snapshot(copy))
    left_over, missing = sorted(files - expected), sorted(expected - files)
    assert not left_over, f"files neither release gives the copy: {left_over}"
    assert not missing, f"missing: {missing}"
    for path in GONE:
        assert path in old_files and not os.path.lexists(copy / path), path
    for path in PRESENT:
        assert path in new_files and (copy / path).is_file(), path
    empty = [
        folder.relative_to(copy).as_posix()
        for folder in copy.rglob("*")
        if folder.is_dir() and ".git" not in folder.relative_to(copy).parts
        if not any(folder.iterdir())
    ]
    assert not empty, f"empty folders left: {empty}"


def ci_environment() -> dict[str, str]:
    """The test's environment without this run's make, pytest, CI or flow settings."""
    env = {
        name: value
        for name, value in environment().items()
        if not name.startswith(("GITHUB_", "FLOWS_", "MAKE", "MFLAGS", "PYTEST_"))
    }
    # Test names in the output, to see that the team's test and the checks ran.
    return {**env, "PYTEST_ADDOPTS": "-v"}


def make(copy: Path, target: str) -> str:
    """`make TARGET` in the copy, as its CI runs it; its output."""
    done = subprocess.run(
        ["make", "-C", str(copy), target],
        env=ci_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=MAKE_TEST_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


def make_test(copy: Path) -> str:
    """The upgrade committed; `make test` first names the missing lock in one line;
    then `make lock` (once, as the CHANGELOG says) and `make test` in a venv of the
    copy's own, synced to the lock it just made."""
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", f"Upgrade the template to {NEW}")
    unlocked = subprocess.run(
        ["make", "-C", str(copy), "test"],
        env=ci_environment(),
        capture_output=True,
        text=True,
        timeout=MAKE_TEST_SECONDS,
        check=False,
    )
    assert unlocked.returncode != 0
    assert (
        "error: requirements-kubernetes.lock is missing: run `make lock`"
        in unlocked.stderr.splitlines()
    ), unlocked.stderr[-3000:]
    print(make(copy, "lock"))
    return make(copy, "test")


@pytest.mark.timeout(3 * MAKE_TEST_SECONDS)
def test_a_team_repository_made_from_v1_2_3_upgrades_to_this_release_and_passes_its_checks(
    tmp_path,
):
    """A copy of v1.2.3 with a flow of its own, upgraded by its own v1.2.3 code, holds
    this release's template files exactly, none of the old ones nor their folders, and
    its team's files as they were; then its `make test` passes."""
    template = released_template(tmp_path)
    copy = make_copy(template, OLD, tmp_path)
    write_the_first_flow(copy)
    team = team_files(template, copy)

    upgraded = run_util(copy, "upgrade", "--from", str(template), "--to", NEW)

    assert upgraded.returncode == 0, upgraded.stderr
    summary = upgraded.stdout.splitlines()[0]
    print(f"\n{summary}")
    assert summary.startswith(f"upgraded the template from {OLD} to {NEW}: ")
    assert NEW_NOTE in upgraded.stdout
    assert_holds_the_new_release(copy, template, tmp_path)
    assert_nothing_else_is_left(copy, template, team)
    files = snapshot(copy)
    assert {path: files.get(path) for path in team} == team
    output = make_test(copy)
    assert (
        "test_orders_flow.py::test_totals_per_customer_in_dollars_largest_first PASSED"
        in output
    )
    assert (
        "test_flow_file_defines_its_flow[orders_flow.py-orders_flow] PASSED" in output
    )
