"""The runtime image, built from image/ with its own Dockerfile, checked from inside:
every module of flows/ imports as the image's user, a missing package is named, and
the installed packages come compiled."""

from pathlib import Path

import pytest

import image_checks
import locks
from docker_support import docker_daemon, runtime_image  # pylint: disable=unused-import

# pylint: disable=redefined-outer-name
pytestmark = pytest.mark.docker
FLOWS_DIR = Path(__file__).resolve().parents[2]


def test_every_flow_module_imports_in_the_image(runtime_image):
    """The team's flows, their helpers and the toolkit import in the image, as its
    non-root user, from a read-only flows/ (no bytecode written beside them)."""
    modules = image_checks.flow_modules(FLOWS_DIR)
    assert "toolkit.delivery" in modules and "util" in modules
    uid, failures = image_checks.import_failures(runtime_image.name, FLOWS_DIR, modules)
    assert uid != 0
    assert not failures, "\n".join(failures)


def test_a_package_the_image_lacks_fails_the_check_naming_it(runtime_image, checkout):
    """A flow importing a package image/requirements.txt does not list: the check
    names that flow and that package, and nothing else."""
    flows = checkout / "flows"
    (flows / "excel_report.py").write_text('"""A report."""\n\nimport openpyxl\n')
    modules = image_checks.flow_modules(flows)
    _, failures = image_checks.import_failures(runtime_image.name, flows, modules)
    assert failures == [
        "excel_report: imports 'openpyxl', which the image lacks: list its package "
        "in image/requirements.txt, then run `make lock`"
    ]


def test_the_image_holds_bytecode_its_user_can_read(runtime_image):
    """Every module of the heavy packages is compiled at install and readable by the
    image's user, who cannot write __pycache__: no run compiles them again. The
    import time of those packages is printed."""
    uid, counts = image_checks.compiled_files(runtime_image.name)
    seconds = image_checks.import_seconds(runtime_image.name)
    print(
        f"import {', '.join(image_checks.HEAVY_IMPORTS)} as uid {uid}: best "
        f"{min(seconds):.2f} s of {', '.join(f'{s:.2f}' for s in seconds)}"
    )
    assert uid != 0
    uncompiled = {
        package: sources - compiled
        for package, (sources, compiled) in counts.items()
        if compiled < sources
    }
    assert uncompiled == {}, counts


def test_the_image_holds_exactly_the_releases_of_its_lock(runtime_image):
    """Every package image/requirements.lock pins for Linux and Python 3.11 is in the
    image at that release: the image runs what the venvs tested."""
    locked = locks.pins_for(locks.REPOSITORY_DIR / locks.RUNTIME.path)
    installed = image_checks.installed_versions(runtime_image.name)
    differing = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    print(f"{len(locked)} locked packages, all at their locked release in the image")
    assert differing == {}
