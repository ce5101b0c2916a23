"""The environments are their locks, and the locks are complete and current.

A fresh virtual environment built from image/requirements.lock alone (the image's
lock: the team's list and the template's it includes) imports every module a run may
load; the venv running these checks holds exactly its lock; every lock is newer than
the requirements it is made from. deptry, in `make lint`, proves the other half:
every import declared, nothing declared unused. `make test-image` runs the same import
in the image itself (flows/toolkit/tests/test_image.py).
"""

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import locks
from image_checks import flow_modules
from run_tool import run_tool

REPOSITORY_DIR = Path(__file__).resolve().parents[3]
FLOWS_DIR = REPOSITORY_DIR / "flows"
# uv sits beside the interpreter that runs the checks (`make venv` installs it).
UV = Path(sys.executable).parent / "uv"


def test_the_image_lock_alone_imports_every_flow_module(tmp_path):
    """A fresh virtual environment from image/requirements.lock imports all of flows/."""
    environment = tmp_path / "venv"
    created = run_tool(UV, "venv", "--quiet", "--python", sys.executable, environment)
    assert created.returncode == 0, created.stderr
    python = environment / "bin" / "python"
    lock = REPOSITORY_DIR / locks.RUNTIME.path
    installed = run_tool(
        UV,
        *("pip", "install", "--quiet", "--require-hashes", "--python", python),
        *("-r", lock),
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    modules = flow_modules(FLOWS_DIR)
    assert "toolkit.deployer.deploy" in modules and "util" in modules
    importing = run_tool(
        python,
        "-c",
        "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]",
        *modules,
        cwd=FLOWS_DIR,
    )
    assert importing.returncode == 0, importing.stderr[-3000:]


# Installed with the venv itself, not from any lock.
SEED_PACKAGES = {"pip", "setuptools"}


def installed_here() -> dict[str, str]:
    """{normalised name: version} of every distribution in this interpreter's venv."""
    return {
        locks.normalise(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }


def test_every_lock_is_current():
    """No requirements file changed after its lock was made (tools/locks.py check,
    which `make venv` also runs first)."""
    locks.check()


def test_this_venv_holds_exactly_its_lock():
    """`make venv` synced this venv to its lock: the same packages at the same
    releases, nothing more (the Kubernetes lock where the extra is installed)."""
    installed = installed_here()
    lock = locks.KUBERNETES if "prefect-kubernetes" in installed else locks.DEV
    locked = locks.pins_for(REPOSITORY_DIR / lock.path)
    extra = {
        name: version
        for name, version in installed.items()
        if name not in locked and name not in SEED_PACKAGES
    }
    differing = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    assert (extra, differing) == ({}, {}), f"against {lock.path}"


def test_the_venv_locks_keep_the_image_lock_s_releases():
    """Prefect, and every package the image shares with a venv, is the same release in
    all three locks."""
    runtime = locks.read_pins(REPOSITORY_DIR / locks.RUNTIME.path)
    for lock in (locks.DEV, locks.KUBERNETES):
        pins = locks.read_pins(REPOSITORY_DIR / lock.path)
        assert {name: pins.get(name) for name in runtime} == runtime, lock.path
    assert re.fullmatch(r"2\.20\.\d+", runtime["prefect"])


def _copy_of_the_requirements(folder: Path) -> Path:
    for lock in locks.LOCKS:
        for name in [*locks.all_inputs(lock), lock.path]:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPOSITORY_DIR / name, folder / name)
    return folder


@pytest.mark.parametrize(
    "changed, named",
    [
        ("image/requirements.txt", "image/requirements.txt"),
        ("image/requirements-template.txt", "image/requirements-template.txt"),
        ("requirements-dev.txt", "requirements-dev.txt"),
    ],
)
def test_a_requirement_added_without_a_new_lock_fails_in_one_line(
    tmp_path, changed, named
):
    """A requirement added to any requirements file, the lock not made again: the
    check fails with exit status 2 and one line naming that file and `make lock`. A
    comment alone needs no new lock."""
    copy = _copy_of_the_requirements(tmp_path)
    with open(copy / changed, "a", encoding="utf-8") as requirements:
        requirements.write("\n# a comment changes nothing\n")
    assert locks.stale_reason(locks.KUBERNETES, copy) is None
    with open(copy / changed, "a", encoding="utf-8") as requirements:
        requirements.write("openpyxl>=3.1,<4\n")
    script = Path(locks.__file__)
    result = subprocess.run(
        [sys.executable, script, "check"],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "FLOWS_LOCKS_ROOT": str(copy)},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {named} changed after ")
    assert lines[0].endswith("run `make lock`")
