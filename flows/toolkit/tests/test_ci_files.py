"""The workflows, the image and the dependency list, checked here as far as possible."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fixture_checkout import lay_out_flows
from run_tool import run_tool


REPOSITORY_DIR = Path(__file__).resolve().parents[3]
TOOLS_BIN = Path(sys.executable).parent
WORKFLOWS = sorted((REPOSITORY_DIR / ".github" / "workflows").glob("*.yml"))


def check_workflows(*files) -> subprocess.CompletedProcess:
    """check-jsonschema with its built-in (offline) GitHub workflow schema."""
    schema = ["--builtin-schema", "vendor.github-workflows"]
    return run_tool(TOOLS_BIN / "check-jsonschema", *schema, *files)


def test_workflows_are_valid_github_workflows():
    """Every workflow passes GitHub's workflow schema."""
    assert [path.name for path in WORKFLOWS] == [
        "deploy.yml",
        "image.yml",
        "lock-update.yml",
        "pr-checks.yml",
    ]
    result = check_workflows(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_workflow_is_caught(tmp_path):
    """The schema check fails on a job without runs-on (so it can fail at all)."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: make test\n")
    assert check_workflows(broken).returncode != 0


def zizmor(*paths, config=True) -> subprocess.CompletedProcess:
    """zizmor as `make lint` runs it: offline (no GitHub token), medium or higher."""
    options = ["--offline", "--no-progress", "--color", "never"]
    options += ["--min-severity", "medium"]
    if not config:
        options.append("--no-config")
    return run_tool(TOOLS_BIN / "zizmor", *options, *paths)


def test_workflows_pass_zizmor():
    """No finding of medium or higher in .github/ (workflows and dependabot.yml)."""
    result = zizmor(REPOSITORY_DIR / ".github")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_auditor_persona_finds_nothing_and_main_has_a_key_of_its_own():
    """zizmor at its strictest (the auditor persona, every severity) finds nothing:
    no secret is read outside a GitHub environment, so main's Prefect key lives in
    the `main` environment, behind its protection rules, and pull requests get the
    `dev` one."""
    result = run_tool(
        TOOLS_BIN / "zizmor",
        *("--offline", "--no-progress", "--color", "never", "--persona", "auditor"),
        REPOSITORY_DIR / ".github",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr
    deploy = yaml.safe_load(
        (REPOSITORY_DIR / ".github/workflows/deploy.yml").read_text()
    )
    jobs = deploy["jobs"]
    assert jobs["deploy"]["environment"] == (
        "${{ github.event_name == 'pull_request' && 'dev' || 'main' }}"
    )
    assert jobs["deploy"]["env"]["FLOWS_IMAGE_DIGEST"] == "require"
    assert jobs["delete-branch"]["environment"] == "dev"
    for job in jobs.values():
        assert job["env"]["PREFECT_API_KEY"] == "${{ secrets.PREFECT_API_KEY }}"
    assert "secrets." not in str(deploy.get("env", {}))


def test_workflows_pin_actions_keep_no_token_and_ask_least_permissions():
    """Every action is pinned to a commit with its version in a comment, no checkout
    keeps its token, and only these jobs may write: the image job (its packages, and
    starting the Deploy workflow on main) and the lock update (its branch and pull
    request)."""
    may_write = {
        "image.yml": {"packages", "actions"},
        "lock-update.yml": {"contents", "pull-requests"},
    }
    for path in WORKFLOWS:
        text = path.read_text()
        for line in re.findall(r"^\s*(?:- )?uses: .*$", text, re.M):
            assert re.search(
                r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line
            ), f"{path.name}: {line.strip()}"
        workflow = yaml.safe_load(text)
        assert workflow["permissions"] == {}, path.name
        for name, job in workflow["jobs"].items():
            writes = {k for k, v in job["permissions"].items() if v == "write"}
            expected = may_write.get(path.name, set())
            assert writes == expected, f"{path.name} {name}: {writes}"
            for step in job["steps"]:
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False


def test_an_unpinned_action_is_caught_by_zizmor(tmp_path):
    """A workflow clean but for `actions/checkout@v4` fails the check (so it can)."""
    workflow = tmp_path / ".github" / "workflows" / "unpinned.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(
        "name: Unpinned\n"
        "on: push\n"
        "permissions: {}\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: %s\n"
        "        with:\n"
        "          persist-credentials: false\n"
    )
    pinned = "actions/checkout@11d5960a326750d5838078e36cf38b85af677262 # v4.4.0"
    workflow.write_text(workflow.read_text() % pinned)
    clean = zizmor(workflow, config=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    workflow.write_text(workflow.read_text().replace(pinned, "actions/checkout@v4"))
    result = zizmor(workflow, config=False)
    assert result.returncode != 0
    assert "unpinned-uses" in result.stdout + result.stderr


def test_dependabot_proposes_updates_of_the_pins_and_the_base_image():
    """Weekly update PRs for the actions and for the image's base; the locks have a
    workflow of their own, weekly too, that runs the full checks on its update."""
    config = yaml.safe_load((REPOSITORY_DIR / ".github" / "dependabot.yml").read_text())
    updates = {
        (update["package-ecosystem"], update["directory"]): update["schedule"]
        for update in config["updates"]
    }
    assert set(updates) == {("github-actions", "/"), ("docker", "/image")}
    assert all(schedule["interval"] == "weekly" for schedule in updates.values())
    lock_update = yaml.safe_load(
        (REPOSITORY_DIR / ".github" / "workflows" / "lock-update.yml").read_text()
    )
    # yaml reads the key `on` as True.
    assert lock_update[True]["schedule"] == [{"cron": "17 5 * * 1"}]
    runs = "\n".join(workflow_runs("lock-update.yml"))
    assert "make lock UPGRADE=1 EXCLUDE_NEWER=" in runs
    assert "bash .ci/run" in runs and "gh pr create" in runs
    result = run_tool(
        TOOLS_BIN / "check-jsonschema",
        "--builtin-schema",
        "vendor.dependabot",
        REPOSITORY_DIR / ".github" / "dependabot.yml",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint(tmp_path):
    """The Dockerfile is lint-clean, and its base is Prefect's image, pinned: the
    default of the build argument BASE_IMAGE. hadolint does not read a FROM through
    an argument, so it also lints the FROM with the default put in, and catches an
    unpinned one."""
    dockerfile = REPOSITORY_DIR / "image" / "Dockerfile"
    result = run_tool(TOOLS_BIN / "hadolint", dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    base = re.search(
        r"^ARG BASE_IMAGE=(prefecthq/prefect:2\.20\.\d+-python3\.11"
        r"(?:@sha256:[0-9a-f]{64})?)$",
        text,
        re.M,
    )
    assert base and re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert re.search(r"^USER \d+$", text, re.M), "the image runs as a non-root user"
    resolved = tmp_path / "Dockerfile"
    resolved.write_text(text.replace("${BASE_IMAGE}", base.group(1)))
    assert run_tool(TOOLS_BIN / "hadolint", resolved).returncode == 0
    resolved.write_text(text.replace("${BASE_IMAGE}", "prefecthq/prefect:latest"))
    assert run_tool(TOOLS_BIN / "hadolint", resolved).returncode != 0


def test_every_import_is_declared_and_nothing_unused():
    """deptry: flows/ imports only what image/requirements.txt declares."""
    result = run_tool(TOOLS_BIN / "deptry", "flows")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_undeclared_import_is_caught(tmp_path):
    """On a copy, a flow importing a package missing from requirements.txt fails."""
    copy = tmp_path / "repository"
    for name in (
        "pyproject.toml",
        "image/requirements.txt",
        "image/requirements-template.txt",
    ):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPOSITORY_DIR / name, copy / name)
    lay_out_flows(copy / "flows")
    assert run_tool(TOOLS_BIN / "deptry", "flows", cwd=copy).returncode == 0
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


def workflow_steps(name: str) -> list[dict]:
    """Every step of every job of a workflow."""
    workflow = yaml.safe_load(
        (REPOSITORY_DIR / ".github" / "workflows" / name).read_text()
    )
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_pr_checks_run_the_team_checks_always_and_the_toolkit_suite_on_change():
    """The PR job runs the copy's checks, then the toolkit's suite only when a
    template path changed or in the template repository itself."""
    steps = workflow_steps("pr-checks.yml")
    assert steps[0]["with"]["fetch-depth"] == 0, "the change is compared with its base"
    runs = [step.get("run", "") for step in steps]
    assert "bash .ci/run team" in runs
    [decide] = [step for step in steps if "template-changed" in step.get("run", "")]
    assert "is_template" in decide["env"]["IS_TEMPLATE"]
    [template_suite] = [
        step for step in steps if step.get("run") == "bash .ci/run template"
    ]
    assert template_suite["if"] == f"steps.{decide['id']}.outputs.changed == 'true'"


def test_ci_run_runs_both_suites_with_services_required():
    """`.ci/run` alone (as CI calls it) runs make test, make test-template and make
    test-image."""
    ci_run = (REPOSITORY_DIR / ".ci" / "run").read_text()
    assert "export REQUIRE_SERVICES=1" in ci_run
    assert "suites=(team template)" in ci_run
    assert re.search(r"team\) make test ;;", ci_run)
    assert re.search(
        r"template\) install_services && make test-template test-image test-faults ;;",
        ci_run,
    )


def test_make_test_lints_and_tests_the_team_files_only():
    """make test: black and pylint >= 8.5 on flows/ without the toolkit, the checks of
    the workflows, the Dockerfile and the dependencies, then pytest (team tests and the
    toolkit's checks of every copy)."""
    commands = make_commands("test")
    assert "-m black --check --extend-exclude '^/flows/toolkit/' flows" in commands
    assert (
        "-m pylint --jobs=2 --fail-under=8.5 --ignore-paths='^flows/toolkit/.*$' flows"
        in (commands)
    )
    assert "zizmor --offline --no-progress --min-severity medium .github" in commands
    for check in ("check-jsonschema", "hadolint image/Dockerfile", "deptry flows"):
        assert check in commands
    assert re.search(r"^\S+python -m pytest$", commands, re.M)
    testpaths = (REPOSITORY_DIR / "pytest.ini").read_text()
    assert "testpaths = flows/tests flows/toolkit/checks" in testpaths


def test_make_test_template_lints_and_tests_the_toolkit():
    """make test-template: black and pylint on the template's Python, then the
    toolkit's real-server suite."""
    commands = make_commands("test-template")
    assert "-m black --check flows/toolkit flows/util.py tools bench" in commands
    assert (
        "-m pylint --jobs=2 --fail-under=8.5 flows/toolkit flows/util.py tools bench"
        in (commands)
    )
    assert re.search(
        r'-m pytest -n \d+ -m "not faults and not docker" flows/toolkit/tests$',
        commands,
        re.M,
    )
    # The image's tests (marker docker) run apart, in make test-image.
    assert re.search(
        r"-m pytest -m docker -rP flows/toolkit/tests$",
        make_commands("test-image"),
        re.M,
    )
    # The fault tests run through bench/faults.py, which prints each fault's outcome.
    assert re.search(r"bench/faults.py$", make_commands("test-faults"), re.M)


def test_the_image_installs_its_lock_with_hashes_and_rebuilds_when_it_changes():
    """The image installs the runtime lock, made from the team's list and the
    template's it includes, with hashes required; nothing is resolved in the build.
    The image workflow runs when the lock changes."""
    team = (REPOSITORY_DIR / "image" / "requirements.txt").read_text()
    assert "-r requirements-template.txt" in team.splitlines()
    dockerfile = (REPOSITORY_DIR / "image" / "Dockerfile").read_text()
    assert "COPY requirements.lock /opt/flows/" in dockerfile
    install = re.search(r"uv pip install [^\n]*\\\n\s*-r (\S+)", dockerfile)
    assert install and install.group(1) == "/opt/flows/requirements.lock"
    assert "--require-hashes" in install.group(0)
    assert "requirements.txt" not in re.sub(r"(?m)^#.*$", "", dockerfile)
    workflow = yaml.safe_load(
        (REPOSITORY_DIR / ".github" / "workflows" / "image.yml").read_text()
    )
    # yaml reads the key `on` as True.
    assert "image/**" in workflow[True]["push"]["paths"]


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
    """Deploy jobs call Makefile targets; the guide's Deployment page names the same
    commands.

    The guide, not README: README is the team's and may say anything.
    """
    runs = "\n".join(workflow_runs("deploy.yml"))
    assert f"make {target}" in runs
    assert command in make_commands(target, *variables)
    guide = (
        REPOSITORY_DIR / "flows" / "toolkit" / "docs" / "deployment.md"
    ).read_text()
    assert f"make {target}" in guide
