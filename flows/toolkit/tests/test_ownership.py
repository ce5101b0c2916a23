"""template-paths.txt gives every file of the repository to the template or the team."""

import subprocess
from pathlib import Path

import pytest

from toolkit.errors import UserError
from toolkit.template.ownership import (
    PATHS_FILE,
    Ownership,
    read_ownership,
    repository_files,
    unowned_files,
)

REPOSITORY_DIR = Path(__file__).resolve().parents[3]
TEAM_EXAMPLES = (
    "flows/example_flow.py",
    "flows/sample_data.py",
    "flows/sql/students_by_status.sql",
    "flows/tests/test_example_flow.py",
    "flows/our_flow.py",
)


def test_every_tracked_file_has_an_owner():
    """A tracked path that is neither the template's nor the team's is a mistake."""
    ownership = read_ownership(REPOSITORY_DIR)
    tracked = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=REPOSITORY_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    unowned = [path for path in filter(None, tracked) if not ownership.owner_of(path)]
    assert not unowned, f"add these to {PATHS_FILE}: {', '.join(unowned)}"


def test_a_file_named_by_neither_section_is_reported(tmp_path):
    """stray.txt at the top: unowned_files lists it, and only it."""
    paths = tmp_path / PATHS_FILE
    paths.parent.mkdir(parents=True)
    paths.write_text("[template]\nflows/toolkit/\n\n[team]\nflows/\n", "utf-8")
    (tmp_path / "flows" / "our_flow.py").write_text("VALUE = 1\n", "utf-8")
    (tmp_path / "stray.txt").write_text("whose?\n", "utf-8")
    (tmp_path / ".gitignore").write_text("ignored.txt\n", "utf-8")
    (tmp_path / "ignored.txt").write_text("git ignores it\n", "utf-8")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)

    assert unowned_files(tmp_path) == [".gitignore", "stray.txt"]

    # The team names its own paths in a file of its own, never a template file.
    (tmp_path / "team-paths.txt").write_text("stray.txt\nteam-paths.txt\n", "utf-8")
    assert unowned_files(tmp_path) == [".gitignore"]


def test_the_template_claims_no_team_file():
    """The example flow, its data and SQL, and the team's tests are the team's."""
    ownership = read_ownership(REPOSITORY_DIR)
    for path in TEAM_EXAMPLES:
        assert ownership.owner_of(path) == "team", path
    for line in ownership.template:
        if line.startswith("flows/"):
            assert line in ("flows/toolkit/", "flows/util.py"), line


def test_the_template_settings_name_no_example():
    """pyproject.toml is the template's: a team repository deletes the example it would name."""
    text = (REPOSITORY_DIR / "pyproject.toml").read_text(encoding="utf-8")
    assert "example_flow" not in text


# What the template may say of the example: the guide's first page tells how to delete
# it, and the tests of the upgrade and of day one delete it from a team repository.
MAY_NAME_THE_EXAMPLE = {
    "flows/toolkit/docs/first-flow.md",
    "flows/toolkit/tests/test_first_flow.py",
    "flows/toolkit/tests/test_ownership.py",
    "flows/toolkit/tests/test_upgrade.py",
}


def test_no_template_file_names_a_team_module():
    """The template's files work in a team repository without the example: none names its
    modules (the Makefile's demo finds the first flow file, the benchmarks and tests
    use the toolkit's fixture flow)."""
    ownership = read_ownership(REPOSITORY_DIR)
    naming = [
        path
        for path in repository_files(REPOSITORY_DIR)
        if ownership.owner_of(path) == "template"
        and path not in MAY_NAME_THE_EXAMPLE
        and (REPOSITORY_DIR / path).is_file()
        and any(
            module
            in (REPOSITORY_DIR / path).read_text(encoding="utf-8", errors="replace")
            for module in ("example_flow", "sample_data")
        )
    ]
    assert not naming, f"template files naming the example: {naming}"


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        ("flows/toolkit/cli.py", "template"),
        ("flows/toolkit_extra.py", "team"),
        ("flows/util.py", "template"),
        ("flows/util.py.orig", "team"),
        ("Makefile", "template"),
        ("Makefile.local", None),
        (".github/workflows/deploy.yml", "template"),
        (".github/workflows/ours.yml", "team"),
    ],
)
def test_the_template_wins_over_the_team(path, owner):
    """A file line names that file only; a folder line all below it."""
    ownership = Ownership.parse(
        "# comment\n[template]\nflows/toolkit/\nflows/util.py  # the shim\n"
        "Makefile\n.github/workflows/deploy.yml\n\n[team]\nflows/\n.github/\n"
    )
    assert ownership.owner_of(path) == owner


@pytest.mark.parametrize("text", ["flows/\n", "[templates]\nflows/\n"])
def test_a_line_outside_the_sections_is_a_user_error(text):
    """The message names the line and the fix."""
    with pytest.raises(UserError, match="line 1: .*\\[template\\] or \\[team\\]"):
        Ownership.parse(text)
