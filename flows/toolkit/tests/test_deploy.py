"""`deploy` against a real Prefect server, from temporary git checkouts."""

import json
import os
from pathlib import Path

import pytest
from conftest import REPO_NAME, git
from deploy_helpers import (
    deploy_with_registration_refused,
    read_block_basepath,
    read_deployment,
    run_command_line,
    stored_files,
)

from toolkit.deployer import prefect_api
from toolkit.deployer.naming import branch_slug
from toolkit.deployer.repository import read_repository
from toolkit.deployer.storage import MANIFEST_NAME, VERIFY_STEP
from toolkit.settings import Settings

EXPECTED_FILES = [
    "toolkit/cli/__init__.py",
    "toolkit/database.py",
    "toolkit/delivery.py",
    "toolkit/errors.py",
    "toolkit/settings.py",
    "fixture_flow.py",
    "util.py",
]
# What of the toolkit a run never loads: the deploy and release machinery, the
# documents, tests and checks.
TOOLKIT_LEFT_OUT = ("deployer", "template", "docs", "tests", "checks")


def expected_files(checkout: Path) -> list[str]:
    """flows/ of the checkout minus what .prefectignore excludes (tests, caches) and
    what of the toolkit a run never needs (the deployer, the template machinery,
    checks, documents, the release record)."""
    flows = checkout / "flows"
    return sorted(
        path.relative_to(flows).as_posix()
        for path in flows.rglob("*")
        if path.is_file()
        and "tests" not in path.relative_to(flows).parts
        and not _left_out_of_the_toolkit(path.relative_to(flows))
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
    )


def _left_out_of_the_toolkit(relative: Path) -> bool:
    if relative.parts[0] != "toolkit":
        return False
    if len(relative.parts) == 2:
        return relative.suffix in (".md", ".txt", ".json")
    return relative.parts[1] in TOOLKIT_LEFT_OUT


def test_expected_files_are_the_template_files(checkout):
    """The helper above sees the template's own files (no test of an empty list),
    and none of the deploy or release machinery."""
    expected = set(expected_files(checkout))
    assert set(EXPECTED_FILES) <= expected
    assert not [name for name in expected if name.startswith("toolkit/deployer/")]
    assert (checkout / "flows" / "toolkit" / "deployer" / "deploy.py").is_file()


@pytest.mark.usefixtures("prefect_api_url")
def test_deploy_from_main_registers_main(checkout, capsys):
    """On main: tag and queue main, the main image, storage under main/{repo}."""
    code, out, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert (code, err) == (0, ""), err

    deployment = read_deployment("demo | main | fixture_flow")
    storage = Path(os.environ["FLOWS_STORAGE_ROOT"]) / "main" / REPO_NAME
    assert deployment.tags == ["main", "sales"]
    assert deployment.work_pool_name == os.environ["FLOWS_WORK_POOL"]
    assert deployment.work_queue_name == "main"
    assert deployment.job_variables["image"] == f"localhost:5000/{REPO_NAME}:main"
    assert deployment.entrypoint == "fixture_flow.py:fixture_flow"
    assert deployment.version == git(checkout, "rev-parse", "HEAD")[:12]
    fetch, verify = deployment.pull_steps
    block_name = fetch["prefect.deployments.steps.pull_with_block"][
        "block_document_name"
    ]
    assert verify == VERIFY_STEP
    (copy,) = storage.iterdir()
    assert read_block_basepath(block_name) == str(copy)
    assert stored_files(storage) == expected_files(checkout)
    assert "tests/test_deploy.py" not in stored_files(storage)
    assert "demo | main | fixture_flow" in out and " as main," in out


@pytest.mark.usefixtures("prefect_api_url")
def test_deploy_from_feature_branch_registers_dev(checkout, capsys):
    """On feature/x-1: tag and queue dev, a readable name, its own storage folder."""
    git(checkout, "switch", "-q", "-c", "feature/x-1")
    code, _, err = run_command_line(
        checkout, "deploy", "--docker-label", "feature/x-1", capsys=capsys
    )
    assert (code, err) == (0, ""), err

    slug = branch_slug("feature/x-1")
    assert slug.startswith("feature-x-1-") and slug != branch_slug("feature-x-1")
    deployment = read_deployment(f"demo | {slug} | fixture_flow")
    assert deployment.tags == ["dev"]
    assert deployment.work_queue_name == "dev"
    assert deployment.job_variables["image"] == f"localhost:5000/{REPO_NAME}:{slug}"
    storage = Path(os.environ["FLOWS_STORAGE_ROOT"]) / "dev" / REPO_NAME / slug
    assert stored_files(storage) == expected_files(checkout)
    assert not (Path(os.environ["FLOWS_STORAGE_ROOT"]) / "main").exists()


@pytest.mark.usefixtures("prefect_api_url")
def test_registry_setting_names_the_image(checkout, capsys, monkeypatch):
    """FLOWS_DOCKER_REGISTRY decides where the image comes from."""
    monkeypatch.setenv("FLOWS_DOCKER_REGISTRY", "registry.example.org/data/")
    git(checkout, "switch", "-q", "-c", "registry-check")
    code, _, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert (code, err) == (0, ""), err
    deployment = read_deployment("demo | registry-check | fixture_flow")
    expected_image = f"registry.example.org/data/{REPO_NAME}:main"
    assert deployment.job_variables["image"] == expected_image


@pytest.mark.usefixtures("prefect_api_url")
def test_redeploy_replaces_the_stored_copy(checkout, capsys):
    """A file deleted from flows/ is gone from storage after the next deploy."""
    git(checkout, "switch", "-q", "-c", "cleanup")
    (checkout / "flows" / "old_helper.py").write_text("VALUE = 1\n")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    storage = Path(os.environ["FLOWS_STORAGE_ROOT"]) / "dev" / REPO_NAME / "cleanup"
    assert "old_helper.py" in stored_files(storage)

    (checkout / "flows" / "old_helper.py").unlink()
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    assert "old_helper.py" not in stored_files(storage)
    assert stored_files(storage) == expected_files(checkout)
    assert [p.name for p in storage.parent.iterdir()] == ["cleanup"]


@pytest.mark.usefixtures("prefect_api_url")
def test_failed_registration_keeps_the_previous_deploy(checkout, capsys, monkeypatch):
    """When registering fails, the old copy and the old registration stay as they were."""
    git(checkout, "switch", "-q", "-c", "fragile")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    before = read_deployment("demo | fragile | fixture_flow")
    storage = Path(os.environ["FLOWS_STORAGE_ROOT"]) / "dev" / REPO_NAME / "fragile"
    files_before = stored_files(storage)

    deploy_with_registration_refused(checkout, capsys, monkeypatch)

    assert stored_files(storage) == files_before
    assert [p.name for p in storage.parent.iterdir()] == ["fragile"]
    after = read_deployment("demo | fragile | fixture_flow")
    assert after.updated == before.updated


def test_dry_run_prints_the_plan_and_changes_nothing(checkout, capsys, monkeypatch):
    """--dry-run needs no Prefect API, prints one JSON object, writes nothing."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    git(checkout, "switch", "-q", "-c", "feature/plan")
    (checkout / ".prefectignore").unlink()
    with temporary_settings(updates={PREFECT_API_URL: None}):
        code, out, err = run_command_line(
            checkout, "deploy", "--dry-run", capsys=capsys
        )
    assert (code, err) == (0, "")
    plan = json.loads(out)
    slug = branch_slug("feature/plan")
    assert plan["name"] == f"demo | {slug} | fixture_flow"
    assert plan["flow"] == "fixture-flow"
    assert (plan["branch"], plan["stage"], plan["tags"]) == (
        "feature/plan",
        "dev",
        ["dev"],
    )
    assert plan["work_pool"] == os.environ["FLOWS_WORK_POOL"]
    assert plan["work_queue"] == "dev"
    assert plan["image"] == f"localhost:5000/{REPO_NAME}:main"
    storage_root = Path(os.environ["FLOWS_STORAGE_ROOT"])
    assert plan["storage_location"] == str(storage_root / "dev" / REPO_NAME / slug)
    assert plan["files"] == expected_files(checkout)
    assert not storage_root.exists()
    assert not (checkout / ".prefectignore").exists()


def test_branch_comes_from_github_actions_variables(checkout, capsys, monkeypatch):
    """In GitHub Actions a detached checkout deploys the PR's head branch."""
    git(checkout, "switch", "-q", "--detach")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_HEAD_REF", "feature/from-ci")
    monkeypatch.setenv("GITHUB_REF_NAME", "7/merge")
    code, out, _ = run_command_line(checkout, "deploy", "--dry-run", capsys=capsys)
    assert code == 0
    assert json.loads(out)["branch"] == "feature/from-ci"

    monkeypatch.setenv("GITHUB_HEAD_REF", "")
    code, out, _ = run_command_line(checkout, "deploy", "--dry-run", capsys=capsys)
    assert json.loads(out)["branch"] == "7/merge"


@pytest.mark.parametrize(
    "branch",
    ["main", "feature/x-1", "feature-x-1", "fix%20&<b>", "a/b/c", "-odd.", "x" * 300],
)
def test_branch_slug_is_safe_everywhere(branch):
    """Slugs are valid Docker tags and Prefect names, and kept when already safe."""
    slug = branch_slug(branch)
    assert not any(character in slug for character in "/%&><")
    assert len(slug) <= 128 and slug[0] not in ".-"
    if branch in ("main", "feature-x-1"):
        assert slug == branch
    else:
        assert slug != branch


def test_branch_slugs_do_not_collide():
    """Branches that differ only in their unsafe characters get different slugs."""
    branches = ["feature/x", "feature-x", "feature_x", "feature//x", "feature&x"]
    assert len({branch_slug(branch) for branch in branches}) == len(branches)


@pytest.mark.parametrize(
    "origin_url",
    [
        "https://github.com/acme/acme-data-flows-demo.git",
        "git@github.com:acme/acme-data-flows-demo.git",
        "ssh://git@example.org:22/acme/acme-data-flows-demo/",
        "/srv/git/acme-data-flows-demo/.",
    ],
)
def test_repository_name_from_any_origin_url(checkout, origin_url):
    """The repository name is the last part of origin's URL, whatever its form."""
    git(checkout, "remote", "set-url", "origin", origin_url)
    repository = read_repository(checkout, Settings.from_environment())
    assert repository.name == REPO_NAME


@pytest.mark.usefixtures("prefect_api_url")
def test_the_copy_is_readable_by_every_user(checkout, capsys):
    """Whatever the deployer's umask: a Docker worker runs as another user."""
    git(checkout, "switch", "-q", "-c", "umask")
    (checkout / "flows" / "tool.sh").write_text("#!/bin/sh\n")
    (checkout / "flows" / "tool.sh").chmod(0o750)
    previous = os.umask(0o077)
    try:
        assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    finally:
        os.umask(previous)
    (copy,) = (
        Path(os.environ["FLOWS_STORAGE_ROOT"]) / "dev" / REPO_NAME / "umask"
    ).iterdir()
    assert (copy / "tool.sh").stat().st_mode & 0o777 == 0o755
    assert (copy / "fixture_flow.py").stat().st_mode & 0o777 == 0o644
    assert (copy / "sql").stat().st_mode & 0o777 == 0o755
    assert copy.stat().st_mode & 0o777 == 0o755


@pytest.mark.usefixtures("prefect_api_url")
def test_a_failed_switch_after_registering_says_to_deploy_again(
    checkout, capsys, monkeypatch
):
    """Registered, block not switched: exit 2, and the runs keep a whole copy."""
    git(checkout, "switch", "-q", "-c", "switch")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    storage = Path(os.environ["FLOWS_STORAGE_ROOT"]) / "dev" / REPO_NAME / "switch"
    (old_copy,) = storage.iterdir()

    update_block_data = prefect_api.update_block_data

    async def refuse_the_switch(client, document_id, data):
        if "basepath" in data:  # the pointer; the lease's renewals go through
            raise RuntimeError("the API went away mid-deploy")
        await update_block_data(client, document_id, data)

    monkeypatch.setattr(prefect_api, "update_block_data", refuse_the_switch)
    code, _, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert code == 2
    assert "is registered but its runs still fetch the previous copy" in err
    assert "run deploy again" in err and len(err.splitlines()) == 1
    block = read_deployment("demo | switch | fixture_flow").pull_steps[0]
    name = block["prefect.deployments.steps.pull_with_block"]["block_document_name"]
    assert read_block_basepath(name) == str(old_copy)
    assert (old_copy / MANIFEST_NAME).is_file()
