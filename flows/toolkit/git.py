"""The one way the toolkit runs git: never a prompt, never an endless wait, and a
failure as one line (a UserError) that says what was being done."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from toolkit.errors import UserError

# Local commands answer at once; a fetch of the template over the network may take
# longer, and says so with its own timeout.
GIT_TIMEOUT_SECONDS = 60
FETCH_TIMEOUT_SECONDS = 600


def run_git(
    cwd: Path,
    *arguments: str,
    what: str | None = None,
    stdin: bytes = b"",
    timeout: float = GIT_TIMEOUT_SECONDS,
) -> bytes:
    """git's stdout; a failure is a UserError that starts with `what` (else the
    command) and ends with the first line git printed."""
    command = what or f"`git {' '.join(arguments)}`"
    try:
        completed = subprocess.run(
            ["git", *arguments],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            # No credential prompt can hang a CI job or a deploy.
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            check=False,
        )
    except FileNotFoundError as error:
        raise UserError("git is not installed or not on PATH: install git") from error
    except subprocess.TimeoutExpired as error:
        raise UserError(f"{command} took more than {timeout:g} s") from error
    if completed.returncode != 0:
        raise UserError(f"{command}: {_first_line(completed.stderr)}")
    return completed.stdout


def git_text(
    cwd: Path,
    *arguments: str,
    what: str | None = None,
    timeout: float = GIT_TIMEOUT_SECONDS,
) -> str:
    """run_git's output as text without its last newline; paths git prints need not
    be UTF-8."""
    output = run_git(cwd, *arguments, what=what, timeout=timeout)
    return output.decode("utf-8", "surrogateescape").rstrip("\n")


def git_text_or_empty(cwd: Path, *arguments: str) -> str:
    """git_text, or "" when git fails: for questions whose failure is an answer (no
    remote, no branch, no commit yet)."""
    try:
        return git_text(cwd, *arguments)
    except UserError:
        return ""


def git_succeeds(cwd: Path, *arguments: str) -> bool:
    """Whether the git command succeeds; its output is not wanted."""
    try:
        run_git(cwd, *arguments)
    except UserError:
        return False
    return True


def _first_line(stderr: bytes) -> str:
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return "git failed without saying why"
