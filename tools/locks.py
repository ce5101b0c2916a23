"""The locks every environment installs from: what was tested is what runs.

Four environments, one lock each, every pin with its hashes:

  image/requirements.lock        the runtime image: image/requirements.txt (the team's
                                 packages and the template's list)
  requirements-dev.lock          the developer venv: the runtime plus the dev tools
  requirements-kubernetes.lock   the venv with the opt-in Kubernetes extra
  requirements-prefect3.lock     the developer venv on Prefect 3: the dev lock's inputs
                                 with requirements-prefect3.txt's lines in place of
                                 Prefect 2.20's (uv's overrides), resolved on its own

The Kubernetes lock is resolved first, from every requirements file; the dev lock
keeps its pins, and the runtime lock the dev lock's: a package the image shares with
a venv is the very release that venv tests. Each is one universal resolution for
Python 3.11 (Linux on x86_64 and arm64, and the other platforms a developer may use).

  python3 tools/locks.py write [--upgrade] [--exclude-newer DATE] [--uv PATH]
  python3 tools/locks.py check
  python3 tools/locks.py pins LOCK

`write` keeps every pin it can (uv prefers the lock's versions) unless --upgrade, and
prints each package version that moved. `check` fails in one line, naming the file,
when a requirements file changed after its lock was made. Standard library only: the
check runs before any venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parents[1]
# Where `check` looks; only the tools' own tests point it at a copy.
CHECKED_ROOT = Path(os.environ.get("FLOWS_LOCKS_ROOT") or REPOSITORY_DIR)
PYTHON_VERSION = "3.11"
# Written at the top of each lock: the inputs it was made from, by content.
_INPUT_LINE = re.compile(r"^# input (\S+) sha256=([0-9a-f]{64})$")
_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;([^\\]*))?"
)
_INCLUDE = re.compile(r"^-r\s+(\S+)")


@dataclass(frozen=True)
class Lock:
    """One environment's lock: its file, what it is made from, and which lock's pins
    it must keep."""

    path: str
    inputs: tuple[str, ...]
    keeps: str | None
    what: str
    # Requirements that replace every other requirement of the same package.
    overrides: tuple[str, ...] = ()


# One resolution, three projections: the widest environment is resolved first, and
# each narrower one keeps its pins. So the runtime image runs the very releases both
# venvs test, and the extra is resolved with the runtime, never layered on top
# (alone, the runtime took a cryptography release no pyopenssl for
# prefect-kubernetes accepts).
KUBERNETES = Lock(
    "requirements-kubernetes.lock",
    ("image/requirements.txt", "requirements-dev.txt", "requirements-kubernetes.txt"),
    None,
    "the developer venv with the Kubernetes extra",
)
DEV = Lock(
    "requirements-dev.lock",
    ("image/requirements.txt", "requirements-dev.txt"),
    KUBERNETES.path,
    "the developer venv",
)
RUNTIME = Lock(
    "image/requirements.lock",
    ("image/requirements.txt",),
    DEV.path,
    "the runtime image",
)
PREFECT3 = Lock(
    "requirements-prefect3.lock",
    DEV.inputs,
    None,
    "the developer venv on Prefect 3",
    overrides=("requirements-prefect3.txt",),
)
LOCKS = (KUBERNETES, DEV, RUNTIME, PREFECT3)


class LockError(Exception):
    """A lock that cannot be made or is out of date: one line for the person."""


def requirement_files(relative: str, root: Path = REPOSITORY_DIR) -> list[str]:
    """`relative` and every file it includes with -r, in reading order."""
    found = [relative]
    for line in (root / relative).read_text(encoding="utf-8").splitlines():
        included = _INCLUDE.match(line.strip())
        if included:
            nested = Path(relative).parent / included.group(1)
            found += [
                name
                for name in requirement_files(nested.as_posix(), root)
                if name not in found
            ]
    return found


def requirements_digest(path: Path) -> str:
    """The sha256 of a requirements file's requirements: comments and blank lines
    do not count, so rewording a comment needs no new lock."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        kept = line.split(" #", 1)[0].strip()
        if kept and not kept.startswith("#"):
            lines.append(kept)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def all_inputs(lock: Lock, root: Path = REPOSITORY_DIR) -> list[str]:
    """Every requirements file a lock is made from, includes followed."""
    names: list[str] = []
    for relative in lock.inputs + lock.overrides:
        names += [
            name for name in requirement_files(relative, root) if name not in names
        ]
    return names


def read_pins(path: Path) -> dict[str, str]:
    """{package: version} of a lock or requirements file. A package the universal
    lock pins twice (one release below Python 3.12, another above) is keyed by its
    name and marker: `numpy ; python_full_version < '3.12'`."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            name, version, marker = match.groups()
            key = normalise(name) + (f" ; {marker.strip()}" if marker else "")
            pins[key] = version
    return pins


def pins_for(path: Path, environment: dict | None = None) -> dict[str, str]:
    """{package: version} of the lock's pins whose marker holds in `environment`
    (this interpreter's, by default): what an install from it must hold."""
    # pylint: disable-next=import-outside-toplevel
    from packaging.markers import Marker  # not for `check`, which runs before a venv

    chosen = {}
    for key, version in read_pins(path).items():
        name, _, marker = key.partition(" ; ")
        if not marker or Marker(marker).evaluate(environment):
            chosen[name] = version
    return chosen


def constraint_lines(pins: dict[str, str]) -> str:
    """`pins` as a constraints file (markers kept)."""
    lines = []
    for key, version in sorted(pins.items()):
        name, _, marker = key.partition(" ; ")
        lines.append(f"{name}=={version}" + (f" ; {marker}" if marker else "") + "\n")
    return "".join(lines)


def normalise(name: str) -> str:
    """A package name as PyPI compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def stale_reason(lock: Lock, root: Path = REPOSITORY_DIR) -> str | None:
    """Why `lock` no longer matches what it is made from, or None."""
    lock_path = root / lock.path
    if not lock_path.exists():
        return f"{lock.path} is missing: run `make lock`"
    recorded = {}
    for line in lock_path.read_text(encoding="utf-8").splitlines():
        match = _INPUT_LINE.match(line)
        if match:
            recorded[match.group(1)] = match.group(2)
    for name in all_inputs(lock, root):
        if recorded.get(name) != requirements_digest(root / name):
            return f"{name} changed after {lock.path} was made: run `make lock`"
    for name in set(recorded) - set(all_inputs(lock, root)):
        return f"{lock.path} was made from {name}, no longer an input: run `make lock`"
    if lock.keeps:
        kept, pins = read_pins(root / lock.keeps), read_pins(lock_path)
        for package, version in sorted(pins.items()):
            if kept.get(package) != version:
                return (
                    f"{lock.path} has {package} {version} where {lock.keeps} has "
                    f"{kept.get(package, 'none')}: run `make lock`"
                )
    return None


def check(root: Path = REPOSITORY_DIR) -> None:
    """Raise LockError for the first lock that is out of date."""
    for lock in LOCKS:
        reason = stale_reason(lock, root)
        if reason:
            raise LockError(reason)


def find_uv(explicit: str | None) -> str:
    """The uv to lock with: --uv, the venv's or the running Python's, else PATH's."""
    candidates = [
        explicit,
        str(REPOSITORY_DIR / ".venv/bin/uv"),
        str(Path(sys.executable).parent / "uv"),
        shutil.which("uv"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise LockError("uv is not installed: run `make lock`, which installs it")


def _compile(uv: str, lock: Lock, options: argparse.Namespace, scratch: Path) -> str:
    """uv's lock text for `lock`, made in `scratch` (the lock in place is untouched
    until every lock is made)."""
    output = scratch / Path(lock.path).name
    current = REPOSITORY_DIR / lock.path
    if current.exists() and not options.upgrade:
        shutil.copyfile(current, output)  # uv keeps the versions it finds there
    command = [
        uv,
        "pip",
        "compile",
        "--quiet",
        "--universal",
        "--python-version",
        PYTHON_VERSION,
        "--generate-hashes",
        "--no-header",
        "--output-file",
        str(output),
        *lock.inputs,
    ]
    for overrides in lock.overrides:
        command += ["--override", overrides]
    if lock.keeps:
        constraints = scratch / f"keeps-{Path(lock.keeps).name}"
        pins = read_pins(scratch / Path(lock.keeps).name)
        constraints.write_text(constraint_lines(pins), encoding="utf-8")
        command += ["--constraint", str(constraints)]
    if options.upgrade:
        command.append("--upgrade")
    if options.exclude_newer:
        command += ["--exclude-newer", options.exclude_newer]
    completed = subprocess.run(
        command,
        cwd=REPOSITORY_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.splitlines() if line.strip()]
        detail = " ".join(line.strip() for line in lines[-6:])
        raise LockError(f"{lock.path} could not be made: {detail}")
    text = output.read_text(encoding="utf-8")
    if lock.keeps:
        # uv names the constraints file in its "via" lines: a temporary folder's
        # name would change every line of it at each `make lock`.
        text = text.replace(str(constraints), f"{lock.keeps} (its pins)")
    return text


def _header(lock: Lock) -> str:
    inputs = "".join(
        f"# input {name} sha256={requirements_digest(REPOSITORY_DIR / name)}\n"
        for name in all_inputs(lock)
    )
    return (
        f"# The lock of {lock.what}: `make lock` writes it (tools/locks.py), for\n"
        f"# Python {PYTHON_VERSION}, every release with its hashes; never edit it by"
        " hand.\n"
        "# `make test` refuses it once an input below changed (comments aside).\n"
        f"{inputs}"
    )


def moved_versions(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """One line per package added, removed or moved between two sets of pins."""
    lines = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        lines.append(f"  {name} {old or '(new)'} -> {new or '(removed)'}")
    return lines


def write(options: argparse.Namespace) -> None:
    """Make every lock again; replace the files only once all of them are made."""
    uv = find_uv(options.uv)
    made = {}
    with tempfile.TemporaryDirectory(prefix="locks-") as folder:
        scratch = Path(folder)
        for lock in LOCKS:
            made[lock] = _header(lock) + _compile(uv, lock, options, scratch)
    for lock, text in made.items():
        path = REPOSITORY_DIR / lock.path
        before = read_pins(path) if path.exists() else {}
        temporary = path.with_name(f".{path.name}.new")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
        moved = moved_versions(before, read_pins(path))
        count = len(read_pins(path))
        summary = f"{lock.path}: {count} packages"
        print(f"{summary}, {len(moved)} moved" if moved else f"{summary}, unchanged")
        for line in moved:
            print(line)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    writing = commands.add_parser("write", help="make every lock again")
    writing.add_argument("--upgrade", action="store_true", help="newest allowed")
    writing.add_argument("--exclude-newer", help="no release after this date")
    writing.add_argument("--uv", help="the uv binary to lock with")
    commands.add_parser("check", help="fail when a lock is out of date")
    pins = commands.add_parser("pins", help="print a lock's package==version lines")
    pins.add_argument("lock")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; a LockError is one line on stderr and exit status 2."""
    options = _parser().parse_args(argv)
    try:
        if options.command == "write":
            write(options)
        elif options.command == "check":
            check(CHECKED_ROOT)
        else:
            path = Path(options.lock)
            print(constraint_lines(read_pins(path)), end="")
    except (LockError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
