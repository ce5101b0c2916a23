"""Schedules, main parameters, validation, plan, delete, prune, paused schedules."""

import asyncio
import os
from pathlib import Path

import pytest
from conftest import REPO_NAME, git
from deploy_helpers import count_deployments, read_deployment, run_command_line
from prefect.client.orchestration import get_client
from test_repository_commands import run_repository_command

from toolkit.deployer.naming import branch_slug

MAIN_NAME = "demo | main | fixture_flow"
DEFAULT_DEPLOYMENT = 'main_parameters={"env": "main"},'


def change_flow_file(checkout: Path, old: str, new: str, push: bool = False) -> None:
    """Edit flows/fixture_flow.py; commit and push it when deploying main."""
    path = checkout / "flows" / "fixture_flow.py"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))
    if push:
        git(checkout, "commit", "-q", "-am", f"change {old[:20]}")
        git(checkout, "push", "-q", "origin", "HEAD")


def storage_of(branch_slug_or_main: str, repository: str = REPO_NAME) -> Path:
    """The storage folder of a branch of the test repository."""
    root = Path(os.environ["FLOWS_STORAGE_ROOT"])
    if branch_slug_or_main == "main":
        return root / "main" / repository
    return root / "dev" / repository / branch_slug_or_main


@pytest.mark.usefixtures("prefect_api_url")
def test_schedule_and_parameters_on_main_only(checkout, capsys):
    """main gets the cron schedule, main parameters, extra tags; a branch gets none."""
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    production = read_deployment(MAIN_NAME)
    [schedule] = production.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (
        "0 2 * * *",
        "America/Denver",
    )
    assert schedule.active and not production.paused
    assert production.parameters == {"env": "main"}
    assert production.tags == ["main", "sales"]
    assert "Customer contact: Sales data team" in production.description

    git(checkout, "switch", "-q", "-c", "feature/no-schedule")
    code, out, _ = run_command_line(checkout, "deploy", capsys=capsys)
    assert code == 0
    dev = read_deployment(f"demo | {branch_slug('feature/no-schedule')} | fixture_flow")
    assert dev.schedules == [] and dev.parameters == {} and dev.tags == ["dev"]
    assert "left out on a dev branch: schedule 0 2 * * * (America/Denver)" in out
    assert "left out on a dev branch: main parameters {'env': 'main'}" in out


MISTAKES = {
    "unknown parameter": (
        DEFAULT_DEPLOYMENT,
        'main_parameters={"env": "main", "colour": "red"},',
        "main parameter 'colour' is not a parameter of fixture-flow",
    ),
    "parameter of wrong type": (
        DEFAULT_DEPLOYMENT,
        'main_parameters={"env": "staging"},',
        "main parameters do not fit fixture-flow",
    ),
    "bad cron": ('schedule="0 2 * * *"', 'schedule="0 25 * * *"', "not a valid cron"),
    "bad timezone": (
        'timezone="America/Denver"',
        'timezone="Mars/Olympus_Mons"',
        "not a known IANA timezone",
    ),
    # Prefect itself refuses such a name when the flow file is imported.
    "bad flow name": (
        "@flow\ndef fixture_flow",
        '@flow(name="a/b")\ndef fixture_flow',
        "fixture_flow.py does not import: InvalidNameError: Name 'a/b'",
    ),
}


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_validation_problem_refuses_the_deploy(mistake, checkout, capsys):
    """One problem: exit 2, its line, nothing uploaded or registered."""
    old, new, expected = MISTAKES[mistake]
    change_flow_file(checkout, old, new, push=True)
    before = count_deployments()
    code, _, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert code == 2 and expected in err, err
    assert "1 problem(s), nothing deployed" in err or "does not import" in err
    assert count_deployments() == before
    assert not Path(os.environ["FLOWS_STORAGE_ROOT"]).exists()


@pytest.mark.usefixtures("prefect_api_url")
def test_bad_image_alone_refuses_the_deploy(checkout, capsys, monkeypatch):
    """A registry setting that makes no image reference: exit 2, nothing done."""
    monkeypatch.setenv("FLOWS_DOCKER_REGISTRY", "Not A Registry")
    before = count_deployments()
    code, _, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert code == 2 and "1 problem(s)" in err, err
    assert "image 'Not A Registry/acme-data-flows-demo:main' is not a valid" in err
    assert count_deployments() == before
    assert not Path(os.environ["FLOWS_STORAGE_ROOT"]).exists()


@pytest.mark.usefixtures("prefect_api_url")
def test_bad_deployment_name_alone_refuses_the_deploy(checkout, capsys):
    """A flow file whose name Prefect refuses in a deployment name: exit 2."""
    flows = checkout / "flows"
    (flows / "nightly%extract.py").write_text((flows / "fixture_flow.py").read_text())
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "a flow file named with %")
    git(checkout, "push", "-q", "origin", "HEAD")
    before = count_deployments()
    code, _, err = run_command_line(
        checkout, "deploy", capsys=capsys, flow_file="nightly%extract.py"
    )
    assert code == 2 and "1 problem(s)" in err, err
    assert "deployment name 'demo | main | nightly%extract' contains %" in err
    assert count_deployments() == before
    assert not Path(os.environ["FLOWS_STORAGE_ROOT"]).exists()


@pytest.mark.usefixtures("prefect_api_url")
def test_every_problem_is_reported_at_once(checkout, capsys, monkeypatch):
    """Several problems, including a bad image and deployment name: all listed."""
    monkeypatch.setenv("FLOWS_DOCKER_REGISTRY", "Not A Registry")
    monkeypatch.setenv("FLOWS_REPO_NAME", "acme-data-flows-a&b")
    for mistake in ("unknown parameter", "bad cron", "bad timezone"):
        old, new, _ = MISTAKES[mistake]
        change_flow_file(checkout, old, new)
    git(checkout, "commit", "-q", "-am", "many mistakes")
    git(checkout, "push", "-q", "origin", "HEAD")
    code, _, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert code == 2
    problems = [line for line in err.splitlines() if line.startswith("  - ")]
    assert len(problems) == 5, err
    assert "deployment name 'a&b | main | fixture_flow' contains &" in err
    assert "image 'Not A Registry/" in err
    assert not Path(os.environ["FLOWS_STORAGE_ROOT"]).exists()


@pytest.mark.usefixtures("prefect_api_url")
def test_plan_shows_create_change_and_no_change(checkout, capsys):
    """plan: create before the first deploy, unchanged after it, then the changes."""
    git(checkout, "switch", "-q", "-c", "feature/planned")
    code, out, _ = run_command_line(checkout, "plan", capsys=capsys)
    assert code == 0 and out.startswith("create fixture-flow/demo")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    code, out, _ = run_command_line(checkout, "plan", capsys=capsys)
    assert out.startswith("unchanged fixture-flow/demo"), out

    change_flow_file(checkout, "Nightly extract of", "Nightly university extract of")
    (checkout / "flows" / "new_helper.py").write_text("VALUE = 1\n")
    code, out, _ = run_command_line(checkout, "plan", capsys=capsys)
    assert code == 0 and out.startswith("change fixture-flow/demo"), out
    [description] = [line for line in out.splitlines() if "description:" in line]
    before, after = description.split(" -> ")
    assert "Nightly extract of" in before and "Nightly university extract of" in after
    assert "  file added: new_helper.py" in out
    assert read_deployment(
        f"demo | {branch_slug('feature/planned')} | fixture_flow"
    ).description.startswith("Nightly extract of")


@pytest.mark.usefixtures("prefect_api_url")
def test_delete_removes_the_deployment_and_the_last_copy(checkout, capsys):
    """delete: this branch's deployment goes, and its copy with the last deployment."""
    git(checkout, "switch", "-q", "-c", "feature/short-lived")
    slug = branch_slug("feature/short-lived")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    assert storage_of(slug).is_dir()
    code, out, _ = run_command_line(checkout, "delete", capsys=capsys)
    assert code == 0 and "deleted fixture-flow/demo" in out
    assert read_deployment(f"demo | {slug} | fixture_flow") is None
    assert not storage_of(slug).exists()


@pytest.mark.usefixtures("prefect_api_url")
def test_delete_on_main_needs_the_main_flag(checkout, capsys):
    """Production is deleted only when the person says so."""
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    code, _, err = run_command_line(checkout, "delete", capsys=capsys)
    assert code == 2 and "--main" in err
    assert read_deployment(MAIN_NAME) is not None


@pytest.mark.usefixtures("prefect_api_url")
def test_prune_removes_only_branches_gone_from_origin(checkout, capsys, monkeypatch):
    """A branch deleted on origin loses its deployment and copy; the rest stay."""
    # A repository name of this test's own: prune looks at all of a repository's
    # deployments on the server, which the other tests share.
    repository = "acme-data-flows-prune"
    monkeypatch.setenv("FLOWS_REPO_NAME", repository)
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    for branch in ("feature/merged", "feature/open"):
        git(checkout, "switch", "-q", "-c", branch, "main")
        git(checkout, "push", "-q", "origin", branch)
        assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    git(checkout, "push", "-q", "origin", "--delete", "feature/merged")
    merged, still_open = branch_slug("feature/merged"), branch_slug("feature/open")

    code, out, _ = run_repository_command(
        checkout, "prune", "--dry-run", capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 0
    assert out.splitlines() == [
        f"would delete deployment prune | {merged} | fixture_flow",
        f"would delete storage {storage_of(merged, repository)}",
    ]
    assert storage_of(merged, repository).is_dir()

    code, out, _ = run_repository_command(
        checkout, "prune", capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 0
    assert read_deployment(f"prune | {merged} | fixture_flow") is None
    assert not storage_of(merged, repository).exists()
    assert read_deployment(f"prune | {still_open} | fixture_flow") is not None
    assert storage_of(still_open, repository).is_dir()
    assert read_deployment("prune | main | fixture_flow") is not None
    assert storage_of("main", repository).is_dir()


@pytest.mark.usefixtures("prefect_api_url")
def test_paused_schedule_stays_paused_after_redeploy(checkout, capsys):
    """Re-enabling a paused production schedule is a person's decision."""
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    deployment = read_deployment(MAIN_NAME)

    async def pause():
        async with get_client() as client:
            await client.set_deployment_paused_state(deployment.id, True)

    asyncio.run(pause())
    code, out, _ = run_command_line(checkout, "deploy", capsys=capsys)
    assert code == 0 and "kept PAUSED" in out
    redeployed = read_deployment(MAIN_NAME)
    assert redeployed.paused
    assert [schedule.active for schedule in redeployed.schedules] == [False]
