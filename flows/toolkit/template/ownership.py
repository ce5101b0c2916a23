"""Who owns which file of a team repository, and its files as git sees them.

A team repository (made with "Use this template") holds the template's files and
the team's; flows/toolkit/template-paths.txt says which are which. Standard library,
git and the runtime's errors only: this runs in CI before anything else is
installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UserError
from toolkit.git import git_text

PATHS_FILE = "flows/toolkit/template-paths.txt"
# The team's own additions to the [team] lines (a docs/ folder, say): a file of the
# team's, so that declaring one never means editing a template file.
TEAM_PATHS_FILE = "team-paths.txt"
_SECTIONS = {"[template]": "template", "[team]": "team"}


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
    """The ownership a repository's own template-paths.txt declares, with the team's
    paths of its team-paths.txt, if it has one."""
    path = Path(top_level) / PATHS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise UserError(
            f"{PATHS_FILE} is missing: restore it from the template's release"
        ) from error
    ownership = Ownership.parse(text)
    team_file = Path(top_level) / TEAM_PATHS_FILE
    if not team_file.is_file():
        return ownership
    added = Ownership.parse(
        "[team]\n" + team_file.read_text(encoding="utf-8"), TEAM_PATHS_FILE
    )
    return Ownership(ownership.template, ownership.team + added.team)


def repository_files(top_level: Path) -> list[str]:
    """Tracked files plus untracked ones git does not ignore, sorted."""
    output = git_text(
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


def read_file(path: Path) -> bytes | None:
    """The bytes git would store for the file (a link's target), None if absent."""
    if path.is_symlink():
        return os.fsencode(os.readlink(path))
    if not path.is_file():
        return None
    return path.read_bytes()


def open_repository(top_level: Path) -> Path:
    """The absolute path of `top_level`, once git confirms it is a repository."""
    top_level = Path(top_level).resolve()
    git_text(
        top_level,
        "rev-parse",
        "--git-dir",
        what=f"{top_level} is not a git repository; run this in a clone of it",
    )
    return top_level
