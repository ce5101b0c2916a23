"""`template-changed`: whether a pull request touches the template's files, so that
CI runs the toolkit's suite only then. Standard library, git and the runtime's errors
only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from toolkit.errors import UserError
from toolkit.git import git_text
from toolkit.template.ownership import (
    open_repository,
    read_ownership,
)


def template_changed(top_level: Path, base: str) -> bool:
    """Whether a template path changed between `base` and HEAD (for PR checks)."""
    top_level = open_repository(top_level)
    if base.startswith("-"):
        raise UserError(f"{base} is not a commit: pass a commit, branch or tag")
    ownership = read_ownership(top_level)
    # Without renames a template file moved to a team path still counts as changed.
    arguments = ("diff", "--name-only", "--no-renames", "-z")
    try:
        output = git_text(top_level, *arguments, f"{base}...HEAD", what="")
    except UserError:
        output = git_text(
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
