"""The runtime image's requirements are complete: a fresh virtual environment built
from image/requirements.txt alone (the team's list, which includes the template's)
imports every module a run may load. deptry, in `make lint`, proves the other half:
every import declared, nothing declared unused. `make test-image` runs the same import
in the image itself (flows/toolkit/tests/test_image.py).
"""

import sys
from pathlib import Path

from image_checks import flow_modules
from run_tool import run_tool

REPOSITORY_DIR = Path(__file__).resolve().parents[3]
FLOWS_DIR = REPOSITORY_DIR / "flows"
# uv sits beside the interpreter that runs the checks (`make venv` installs it).
UV = Path(sys.executable).parent / "uv"


def test_requirements_alone_import_every_flow_module(tmp_path):
    """A fresh virtual environment from image/requirements.txt imports all of flows/."""
    environment = tmp_path / "venv"
    created = run_tool(UV, "venv", "--quiet", "--python", sys.executable, environment)
    assert created.returncode == 0, created.stderr
    python = environment / "bin" / "python"
    requirements = REPOSITORY_DIR / "image" / "requirements.txt"
    installed = run_tool(
        UV, "pip", "install", "--quiet", "--python", python, "-r", requirements
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
