"""`python3 flows/util.py deploy-all | delete-branch | docker-label`, real server."""

import os
from pathlib import Path

import pytest
from conftest import REPO_NAME, git
from deploy_helpers import (
    call_command_line,
    count_deployments,
    read_block_basepath,
    read_deployment,
    stored_files,
)

from toolkit import cli
from toolkit.deployer import prefect_api
from toolkit.deployer.naming import pointer_block_name, relative_storage_path
from toolkit.deployer.naming import branch_slug


def run_repository_command(checkout: Path, *args: str, capsys, monkeypatch):
    """Run the repository command line as if from the checkout's flows/."""
    monkeypatch.setattr(cli, "FLOWS_DIR", checkout / "flows")
    return call_command_line(
        lambda: cli.run_repository_command_line_interface(list(args)), capsys
    )


def add_second_flow(checkout: Path) -> None:
    """A second flow file, as a team with two schedules would have."""
    source = (checkout / "flows" / "fixture_flow.py").read_text()
    (checkout / "flows" / "second_flow.py").write_text(source)


@pytest.mark.usefixtures("prefect_api_url")
def test_deploy_all_deploys_every_flow_file(checkout, capsys, monkeypatch):
    """Every flows/*.py ending with the command line gets its deployment."""
    git(checkout, "switch", "-q", "-c", "feature/two")
    add_second_flow(checkout)
    code, out, err = run_repository_command(
        checkout, "deploy-all", capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, "")
    slug = branch_slug("feature/two")
    first = read_deployment(f"demo | {slug} | fixture_flow")
    second = read_deployment(f"demo | {slug} | second_flow")
    assert first is not None and second is not None
    # One copy for the branch, written once, and both deployments pull it.
    branch_storage = Path(os.environ["FLOWS_STORAGE_ROOT"]) / "dev" / REPO_NAME / slug
    assert "second_flow.py" in stored_files(branch_storage)
    assert first.pull_steps == second.pull_steps
    assert out.count("files from flows/ copied to") == 2
    assert (
        len(
            {line.rsplit(" ", 1)[1] for line in out.splitlines() if "copied to" in line}
        )
        == 1
    )


@pytest.mark.usefixtures("prefect_api_url")
def test_deploy_all_checks_every_flow_before_deploying_any(
    checkout, capsys, monkeypatch
):
    """A mistake in the second flow file: the first is not deployed either."""
    git(checkout, "switch", "-q", "-c", "feature/half")
    add_second_flow(checkout)
    with open(checkout / "flows" / "second_flow.py", "a", encoding="utf-8") as source:
        source.write('\nDEPLOYMENT = "nightly"\n')
    deployments_before = count_deployments()
    code, _, err = run_repository_command(
        checkout, "deploy-all", capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 2 and "DEPLOYMENT in" in err, err
    assert count_deployments() == deployments_before
    assert not (Path(os.environ["FLOWS_STORAGE_ROOT"]) / "dev").exists()


@pytest.mark.usefixtures("prefect_api_url")
def test_deploy_all_failing_midway_leaves_no_deployment_copy_or_block(
    checkout, capsys, monkeypatch
):
    """The API refuses the second registration of a branch's first deploy-all: the
    first deployment, the copy and the branch's block are taken back."""
    git(checkout, "switch", "-q", "-c", "feature/midway")
    add_second_flow(checkout)
    register = prefect_api.register_deployment
    calls = []

    async def refuse_the_second(client, plan, flow, **settings):
        calls.append(plan.name)
        if len(calls) == 2:
            raise RuntimeError("the API went away mid-deploy")
        # The keyword arguments pass on as given: pylint cannot see them in **settings.
        # pylint: disable-next=missing-kwoa
        return await register(client, plan, flow, **settings)

    monkeypatch.setattr(prefect_api, "register_deployment", refuse_the_second)
    deployments_before = count_deployments()
    with pytest.raises(RuntimeError, match="went away"):
        run_repository_command(
            checkout, "deploy-all", capsys=capsys, monkeypatch=monkeypatch
        )
    assert len(calls) == 2
    assert count_deployments() == deployments_before
    branch_storage = Path(os.environ["FLOWS_STORAGE_ROOT"]) / "dev" / REPO_NAME
    assert not list(branch_storage.rglob("*.py"))
    block = pointer_block_name(
        relative_storage_path(REPO_NAME, "dev", branch_slug("feature/midway"))
    )
    with pytest.raises(ValueError):
        read_block_basepath(block)


@pytest.mark.usefixtures("prefect_api_url")
def test_delete_branch_removes_only_that_branch(checkout, capsys, monkeypatch):
    """Its deployments, storage copy and block go; other branches and main stay."""
    storage_root = Path(os.environ["FLOWS_STORAGE_ROOT"])
    for branch in ("feature/gone", "feature/kept"):
        git(checkout, "switch", "-q", "-c", branch, "main")
        assert (
            run_repository_command(
                checkout, "deploy-all", capsys=capsys, monkeypatch=monkeypatch
            )[0]
            == 0
        )
    git(checkout, "switch", "-q", "main")
    assert (
        run_repository_command(
            checkout, "deploy-all", capsys=capsys, monkeypatch=monkeypatch
        )[0]
        == 0
    )
    gone, kept = branch_slug("feature/gone"), branch_slug("feature/kept")

    code, out, _ = run_repository_command(
        checkout,
        "delete-branch",
        "feature/gone",
        "--dry-run",
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0 and f"would delete deployment demo | {gone} | fixture_flow" in out
    assert read_deployment(f"demo | {gone} | fixture_flow") is not None

    code, out, _ = run_repository_command(
        checkout,
        "delete-branch",
        "feature/gone",
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0
    assert read_deployment(f"demo | {gone} | fixture_flow") is None
    assert not (storage_root / "dev" / REPO_NAME / gone).exists()
    assert read_deployment(f"demo | {kept} | fixture_flow") is not None
    assert (storage_root / "dev" / REPO_NAME / kept).is_dir()
    assert read_deployment("demo | main | fixture_flow") is not None
    assert (storage_root / "main" / REPO_NAME).is_dir()


def test_delete_branch_refuses_main(checkout, capsys, monkeypatch):
    """Production is never deleted by branch clean-up."""
    code, _, err = run_repository_command(
        checkout, "delete-branch", "main", capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 2 and "never deleted" in err


def test_docker_label_is_the_branch_label(checkout, capsys, monkeypatch):
    """The image workflow tags images with the label deploy --docker-label uses."""
    for branch, expected in (
        ("main", "main"),
        ("feature/x-1", branch_slug("feature/x-1")),
    ):
        code, out, _ = run_repository_command(
            checkout, "docker-label", branch, capsys=capsys, monkeypatch=monkeypatch
        )
        assert (code, out.strip()) == (0, expected)
    git(checkout, "switch", "-q", "-c", "feature/current")
    code, out, _ = run_repository_command(
        checkout, "docker-label", capsys=capsys, monkeypatch=monkeypatch
    )
    assert out.strip() == branch_slug("feature/current")


def test_deploy_all_without_flow_files_is_a_clear_error(checkout, capsys, monkeypatch):
    """A flows/ without flow files: one line, exit 2."""
    for path in (checkout / "flows").glob("*_flow.py"):
        path.unlink()
    code, _, err = run_repository_command(
        checkout, "deploy-all", "--dry-run", capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 2 and "no flow file" in err
