"""The workflows, the image and the dependency list, checked here as far as possible."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


REPOSITORY_DIR = Path(__file__).resolve().parents[3]
TOOLS_BIN = Path(sys.executable).parent
WORKFLOWS = sorted((REPOSITORY_DIR / ".github" / "workflows").glob("*.yml"))


def run_tool(*command, cwd=REPOSITORY_DIR) -> subprocess.CompletedProcess:
    """A check's command, its output kept for the assertion message."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def check_workflows(*files) -> subprocess.CompletedProcess:
    """check-jsonschema with its built-in (offline) GitHub workflow schema."""
    schema = ["--builtin-schema", "vendor.github-workflows"]
    return run_tool(TOOLS_BIN / "check-jsonschema", *schema, *files)


def test_workflows_are_valid_github_workflows():
    """Every workflow passes GitHub's workflow schema."""
    assert [path.name for path in WORKFLOWS] == [
        "deploy.yml",
        "image.yml",
        "pr-checks.yml",
    ]
    result = check_workflows(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_workflow_is_caught(tmp_path):
    """The schema check fails on a job without runs-on (so it can fail at all)."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: make test\n")
    assert check_workflows(broken).returncode != 0


def test_dockerfile_passes_hadolint(tmp_path):
    """The Dockerfile is lint-clean; an unpinned base image is caught."""
    dockerfile = REPOSITORY_DIR / "image" / "Dockerfile"
    result = run_tool(TOOLS_BIN / "hadolint", dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert re.search(r"^FROM prefecthq/prefect:2\.20\.\d+-python3\.11$", text, re.M)
    assert re.search(r"^USER \d+$", text, re.M), "the image runs as a non-root user"
    unpinned = tmp_path / "Dockerfile"
    unpinned.write_text(text.replace("2.20.27-python3.11", "latest"))
    assert run_tool(TOOLS_BIN / "hadolint", unpinned).returncode != 0


def test_every_import_is_declared_and_nothing_unused():
    """deptry: flows/ imports only what image/requirements.txt declares."""
    result = run_tool(TOOLS_BIN / "deptry", "flows")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_undeclared_import_is_caught(tmp_path):
    """On a copy, a flow importing a package missing from requirements.txt fails."""
    copy = tmp_path / "repository"
    shutil.copytree(
        REPOSITORY_DIR,
        copy,
        ignore=shutil.ignore_patterns(".venv", ".local", ".git", "__pycache__"),
    )
    with open(copy / "flows" / "fixture_flow.py", "a", encoding="utf-8") as flow:
        flow.write("\nimport requests  # noqa\n")
    result = run_tool(TOOLS_BIN / "deptry", "--no-ansi", "flows", cwd=copy)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    # requests comes with Prefect, yet a flow that imports it must declare it.
    assert "'requests' imported but" in output


def workflow_runs(name: str) -> list[str]:
    """The `run:` commands of every step of a workflow."""
    workflow = yaml.safe_load(
        (REPOSITORY_DIR / ".github" / "workflows" / name).read_text()
    )
    return [
        step["run"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if "run" in step
    ]


def make_commands(target: str, *variables: str) -> str:
    """What `make TARGET` would run, without running it."""
    result = run_tool("make", "-n", "-B", target, *variables)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_pr_checks_run_black_pylint_and_pytest():
    """The PR job runs .ci/run, which runs `make test`: black, pylint >= 8.5, pytest."""
    assert workflow_runs("pr-checks.yml") == ["bash .ci/run"]
    ci_run = (REPOSITORY_DIR / ".ci" / "run").read_text()
    assert "export REQUIRE_SERVICES=1" in ci_run
    assert re.search(r"^make test$", ci_run, re.M)
    commands = make_commands("test")
    assert "-m black --check flows" in commands
    assert "-m pylint --fail-under=8.5 flows" in commands
    assert re.search(r"^\S+python -m pytest$", commands, re.M)


@pytest.mark.parametrize(
    "target, variables, command",
    [
        ("deploy-all", [], "flows/util.py deploy-all"),
        (
            "delete-branch",
            ["BRANCH=feature/x"],
            'flows/util.py delete-branch "feature/x"',
        ),
    ],
)
def test_deploy_jobs_run_the_commands_the_guide_gives(target, variables, command):
    """Deploy jobs call Makefile targets; the toolkit's guide names the same commands.

    The guide, not README: README is the team's and may say anything.
    """
    runs = "\n".join(workflow_runs("deploy.yml"))
    assert f"make {target}" in runs
    assert command in make_commands(target, *variables)
    guide = (REPOSITORY_DIR / "flows" / "toolkit" / "GUIDE.md").read_text()
    assert f"make {target}" in guide
