"""Which files of flows/ a deploy copies into flow storage: the repository's
.prefectignore (or the default one), and the parts of the toolkit a run never loads."""

from __future__ import annotations

from pathlib import Path

from prefect.utilities.filesystem import filter_files

IGNORE_FILE_NAME = ".prefectignore"
# Written to the top of the repository when it has no .prefectignore of its own: what
# a flow run never needs, and what must never leave the laptop.
DEFAULT_IGNORE_PATTERNS = (
    "# What is never copied from flows/ into flow storage (gitignore syntax,",
    "# relative to flows/).",
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    "tests/",
    "output/",
    ".env",
    "*.secret",
)
# What of the toolkit a run never loads, left out whatever .prefectignore says: the
# deploy and release machinery, the tests and checks, the documents, and the
# release's record and ownership list. The runtime and the command line stay (a flow
# file imports util, which imports the command line).
TOOLKIT_NEVER_DEPLOYED = (
    "toolkit/deployer/",
    "toolkit/template/",
    "toolkit/tests/",
    "toolkit/checks/",
    "toolkit/docs/",
    "toolkit/*.md",
    "toolkit/*.txt",
    "toolkit/*.json",
)


def read_ignore_patterns(top_level: Path) -> list[str]:
    """The patterns of the repository's .prefectignore (or the default ones), and the
    toolkit's files a run never needs."""
    ignore_file = top_level / IGNORE_FILE_NAME
    if ignore_file.is_file():
        lines = ignore_file.read_text(encoding="utf-8").splitlines()
    else:
        lines = list(DEFAULT_IGNORE_PATTERNS)
    patterns = [line for line in lines if line.strip() and not line.startswith("#")]
    return patterns + list(TOOLKIT_NEVER_DEPLOYED)


def write_default_ignore_file(top_level: Path) -> None:
    """Create .prefectignore with the default patterns when the repository has none."""
    ignore_file = top_level / IGNORE_FILE_NAME
    if not ignore_file.exists():
        ignore_file.write_text("\n".join(DEFAULT_IGNORE_PATTERNS) + "\n", "utf-8")


def list_deployable_files(flows_dir: Path, ignore_patterns: list[str]) -> list[str]:
    """The files of flows/ that go into storage, relative to flows/, sorted."""
    included = filter_files(str(flows_dir), ignore_patterns, include_dirs=False)
    return sorted(Path(path).as_posix() for path in included)
