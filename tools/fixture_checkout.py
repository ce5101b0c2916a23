"""flows/ as a team's copy of the template has it, for the toolkit's tests and benchmarks:
the template's util.py and toolkit, and the toolkit's own fixture flow as the team's
files. Never the example: that is the team's, and the first thing a team repository deletes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parents[1]
TOOLKIT_DIR = REPOSITORY_DIR / "flows" / "toolkit"
FIXTURE_FLOWS_DIR = TOOLKIT_DIR / "tests" / "fixture_flows"
FIXTURE_FLOW = ("fixture_flow.py", "fixture_flow")
# The inbound fixture flow joins a checkout only where a test asks for it: the others
# count the flow files they deploy.
INBOUND_FIXTURE_FLOW = ("inbound_fixture_flow.py", "inbound_fixture_flow")
CACHES = shutil.ignore_patterns("__pycache__", ".pytest_cache", "output")


def lay_out_flows(flows: Path) -> None:
    """Fill the folder `flows` with util.py, the toolkit and the fixture flow."""
    shutil.copytree(TOOLKIT_DIR, flows / "toolkit", ignore=CACHES)
    shutil.copy(REPOSITORY_DIR / "flows" / "util.py", flows / "util.py")
    shutil.copytree(
        FIXTURE_FLOWS_DIR,
        flows,
        ignore=shutil.ignore_patterns(
            "__pycache__", ".pytest_cache", "output", INBOUND_FIXTURE_FLOW[0]
        ),
        dirs_exist_ok=True,
    )


def add_inbound_flow(flows: Path) -> None:
    """Add the inbound fixture flow to a laid-out flows/ (its SQL is there already)."""
    shutil.copy(FIXTURE_FLOWS_DIR / INBOUND_FIXTURE_FLOW[0], flows)


def make_git_checkout(folder: Path, branch: str) -> Path:
    """A git checkout `folder/template` of laid-out flows/, committed on `branch`."""
    checkout = folder / "template"
    lay_out_flows(checkout / "flows")
    identity = {
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }
    for command in (
        ["init", "-q", "-b", branch],
        ["add", "-A"],
        ["commit", "-q", "-m", "bench"],
    ):
        subprocess.run(
            ["git", *command],
            cwd=checkout,
            check=True,
            env={**os.environ, **identity},
        )
    return checkout
