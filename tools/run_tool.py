"""A check's command run to the end, its output kept for the assertion message."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parents[1]


def run_tool(*command, cwd=REPOSITORY_DIR, timeout=600) -> subprocess.CompletedProcess:
    """Run `command` in `cwd`; its result, stdout and stderr captured as text."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
