"""Checks of the runtime image from inside, each a Python script run in a new container
as the image's own user, with no network: every module of flows/ imports, the heavy
packages come compiled, and how long they take to import.
"""

from __future__ import annotations

import json
from pathlib import Path

from docker_images import docker

# The packages whose import a flow run pays for, timed in the image.
HEAVY_IMPORTS = ("pandas", "pyarrow", "paramiko", "s3fs", "prefect")


def run_python(image: str, script: str, *arguments, mounts=(), workdir=None) -> dict:
    """Run `script` with Python in a new container of `image`, as the image's own
    user and without a network; the JSON object it prints last."""
    volumes = [part for mount in mounts for part in ("--volume", mount)]
    output = docker(
        "run",
        "--rm",
        "--network",
        "none",
        *volumes,
        *(["--workdir", workdir] if workdir else []),
        "--entrypoint",
        "python",
        image,
        "-c",
        script,
        *arguments,
    )
    return json.loads(output.strip().splitlines()[-1])


# What a deployed copy of flows/ never holds (tests, checks) or a run never imports.
NOT_DEPLOYED = {"tests", "checks", "__pycache__", "output"}


def flow_modules(flows_dir: Path) -> list[str]:
    """Every module of `flows_dir` a run may import (flow files, helpers, the
    toolkit), as dotted names."""
    modules = []
    for path in sorted(flows_dir.rglob("*.py")):
        relative = path.relative_to(flows_dir)
        if NOT_DEPLOYED & set(relative.parts):
            continue
        parts = relative.with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


_IMPORT_EACH = """
import importlib, json, os, sys
failures = []
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        failures.append([module, error.name])
    except Exception as error:
        failures.append([module, f"{type(error).__name__}: {error}"])
print(json.dumps({"uid": os.getuid(), "failures": failures}))
"""


def import_failures(image: str, flows_dir: Path, modules) -> tuple[int, list[str]]:
    """Import each module of `flows_dir` (mounted read-only) in the image; the user
    id it ran as, and one line per module that failed, naming what it lacked."""
    found = run_python(
        image,
        _IMPORT_EACH,
        *modules,
        mounts=[f"{flows_dir}:/opt/flows-check:ro"],
        workdir="/opt/flows-check",
    )
    lines = []
    for module, missing in found["failures"]:
        if missing and " " not in missing:
            missing = (
                f"imports {missing!r}, which the image lacks: list its package in "
                "image/requirements.txt, then run `make lock`"
            )
        lines.append(f"{module}: {missing}")
    return found["uid"], lines


_COUNT_COMPILED = """
import importlib.util, json, os, sys
counts = {}
for package in sys.argv[1:]:
    folder = os.path.dirname(importlib.util.find_spec(package).origin)
    sources = readable = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".py"):
                sources += 1
                compiled = importlib.util.cache_from_source(os.path.join(root, name))
                readable += os.access(compiled, os.R_OK)
    counts[package] = [sources, readable]
print(json.dumps({"uid": os.getuid(), "counts": counts}))
"""


def compiled_files(image: str, packages=HEAVY_IMPORTS) -> tuple[int, dict]:
    """(user id, {package: (.py files, of which compiled and readable by that user)})."""
    found = run_python(image, _COUNT_COMPILED, *packages)
    return found["uid"], {name: tuple(pair) for name, pair in found["counts"].items()}


_TIME_IMPORTS = """
import importlib, json, sys, time
started = time.perf_counter()
for module in sys.argv[1:]:
    importlib.import_module(module)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def import_seconds(image: str, modules=HEAVY_IMPORTS, runs: int = 3) -> list[float]:
    """How long importing `modules` takes in a new container, `runs` times."""
    return [run_python(image, _TIME_IMPORTS, *modules)["seconds"] for _ in range(runs)]


_INSTALLED_VERSIONS = """
import importlib.metadata, json, re
print(json.dumps({
    re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower(): dist.version
    for dist in importlib.metadata.distributions()
}))
"""


def installed_versions(image: str) -> dict[str, str]:
    """{normalised package name: version} of every distribution in the image."""
    return run_python(image, _INSTALLED_VERSIONS)
