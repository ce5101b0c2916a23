"""A deploy, a setup or a delete-branch that dies halfway: what it leaves runs, and the
next command repairs it.

Each dying command is a process of its own, run through die_after.py, which ends it
(os._exit: no except, finally or atexit runs) the moment one step is done. A deploy
dies after the upload of its copy, after the registration, or after the switch of the
branch's block (on a first deploy: its first pointing, which comes before the
registration) and before the old copy is removed. A real process worker then runs what
is registered: its pull fetches the copy the block names and checks it against that
copy's manifest, so a mix of two copies fails the run. The next deploy, prune, setup or
delete-branch must then leave what a faultless one leaves.

The redeploy changes the code so that a run tells which copy it fetched: the old
copy's flow delivers customer names in capitals, the new one's in small letters.
"""

from __future__ import annotations

import asyncio
import csv
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from conftest import git
from deploy_helpers import read_deployment, run_command_line
from die_after import DIED
from prefect.client.orchestration import get_client
from test_deploy_lease import Deploys
from test_lifecycle import change_flow_file
from test_repository_commands import add_second_flow, run_repository_command

import local_prefect
from toolkit.deployer import prefect_api
from toolkit.deployer.naming import (
    deployment_name_prefix,
    dev_branches_path,
    pointer_block_name,
    relative_storage_path,
    short_repository_name,
)
from toolkit.deployer.naming import branch_slug
from toolkit.settings import SETTINGS, Settings
from toolkit.deployer.storage import MANIFEST_NAME, storage_for

pytestmark = pytest.mark.faults

DIE_AFTER = Path(__file__).with_name("die_after.py")
BRANCH = "feature/faulty"
# How long the branch's lease, which a killed deploy or delete-branch holds, outlives
# it: the next deploy waits that long for it, and prune leaves the branch alone.
DEAD_LEASE_SECONDS = 3
# The steps of a deploy a death lands after: storage.py's and prefect_api.py's own.
DEPLOY_STEPS = {
    "upload": "toolkit.deployer.storage.base:FlowStorage.write_copy",
    "registration": "toolkit.deployer.prefect_api:register_deployment",
    "switch": "toolkit.deployer.storage.base:FlowStorage.point",
}
# What a deploy that died after each step leaves: whose code (the old commit's or
# the new one's) the branch's block points at, and whose the registered deployment
# names; None: no block, no deployment.
LEFT_BY_A_DEAD_DEPLOY = {
    ("upload", "first"): (None, None),
    ("switch", "first"): ("new", None),
    ("registration", "first"): ("new", "new"),
    ("upload", "redeploy"): ("old", "old"),
    ("registration", "redeploy"): ("old", "new"),
    ("switch", "redeploy"): ("new", "new"),
}
# The old code delivers names as the fixture flow does; the new code, in small letters.
OLD_SHAPE, NEW_SHAPE = "str.upper()", "str.lower()"


@dataclass(frozen=True)
class Branch:
    """The test's dev branch: its checkout, names and place in flow storage."""

    checkout: Path
    repository: str
    prefix: str  # of the names of the branch's deployments
    location: str
    block: str
    folder: Path  # the test's: logs, and the worker's output below it

    @property
    def delivered(self) -> Path:
        """The orders file a run of the fixture flow delivers."""
        return self.folder / "output" / "dev" / "orders_2024-08-01.csv"

    @property
    def deployment(self) -> str:
        """The name of the branch's deployment of the fixture flow."""
        return f"{self.prefix}fixture_flow"

    def deployments(self) -> list[str]:
        """The names of the branch's deployments, sorted."""

        async def read():
            async with get_client() as client:
                return await prefect_api.names_starting_with(client, self.prefix)

        return sorted(deployment.name for deployment in asyncio.run(read()))

    def commit(self) -> str:
        """The commit the checkout's HEAD is on."""
        return git(self.checkout, "rev-parse", "HEAD")


@pytest.fixture
def branch(checkout, prefect_api_url, tmp_path, monkeypatch) -> Branch:
    """BRANCH checked out and on origin; its deployments run on a process pool.

    A repository name of the test's own: prune and the block listing look at every
    deployment and block of a repository, and the session's server is shared.
    """
    del prefect_api_url  # the commands' server, through the environment
    repository = f"acme-data-flows-faults-{secrets.token_hex(3)}"
    monkeypatch.setenv("FLOWS_REPO_NAME", repository)
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "process")
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "output"))  # the worker's
    lease_variable = SETTINGS["deploy_lease_seconds"].env_var
    monkeypatch.setenv(lease_variable, str(DEAD_LEASE_SECONDS))
    git(checkout, "switch", "-q", "-c", BRANCH)
    git(checkout, "push", "-q", "origin", BRANCH)
    settings = Settings.from_environment()
    slug = branch_slug(BRANCH)
    relative = relative_storage_path(repository, "dev", slug)
    return Branch(
        checkout=checkout,
        repository=repository,
        prefix=deployment_name_prefix(
            short_repository_name(repository, settings.repo_name_marker), slug
        ),
        location=settings.storage_location(relative),
        block=pointer_block_name(relative),
        folder=tmp_path,
    )


def commit_of(copy: str) -> str:
    """The (short) commit a copy holds, as its name `{stamp}-{commit}-{random}` says."""
    return copy.split("-")[1]


@dataclass(frozen=True)
class Stored:
    """A branch's place in flow storage: its copies (by commit) and its block."""

    copies: list[str]
    whole: list[str]
    pointer: str | None  # the copy the block names; None: no block

    def commits(self) -> list[str]:
        """The commit of each copy, sorted."""
        return sorted(commit_of(copy) for copy in self.copies)


def stored(branch: Branch) -> Stored:
    """What flow storage and the API hold of the branch, read through the toolkit's
    own storage (a folder or S3, as FLOWS_STORAGE_ROOT says)."""
    storage = storage_for(Settings.from_environment())

    async def read() -> Stored:
        async with get_client() as client:
            pointer = await storage.current_copy(client, branch.block)
        filesystem = await storage.connected()
        path = storage.path_of(branch.location)
        found = filesystem.ls(path, detail=False) if filesystem.exists(path) else []
        copies = sorted(PurePosixPath(item).name for item in found)
        whole = [c for c in copies if filesystem.exists(f"{path}/{c}/{MANIFEST_NAME}")]
        if pointer is not None:
            pointer = pointer.removeprefix(f"{branch.location}/")
        return Stored(copies, whole, pointer)

    return asyncio.run(read())


def blocks_of(repository: str) -> list[str]:
    """The names of the blocks of any type of every branch of `repository`: its
    pointers, and any lease record a deploy left."""
    # Each branch's block name starts with what the repository's folder would have.
    prefix = pointer_block_name(dev_branches_path(repository)).rsplit("-", 1)[0]

    async def read() -> list[str]:
        async with get_client() as client:
            documents = await client.read_block_documents(include_secrets=False)
        return sorted(d.name for d in documents if d.name.startswith(prefix))

    return asyncio.run(read())


def die_after(checkout: Path, step: str, *command: str, log: Path, fault) -> None:
    """Run `python3 COMMAND` in the checkout until `step` is done, then kill it there."""
    fault.watch(log)
    with open(log, "w", encoding="utf-8") as output:
        died = subprocess.run(
            [sys.executable, str(DIE_AFTER), step, *command],
            cwd=checkout,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    assert died.returncode == DIED, log.read_text(encoding="utf-8")


def deploy(branch: Branch, capsys) -> None:
    """`python3 flows/fixture_flow.py deploy`, which must succeed."""
    code, _, err = run_command_line(branch.checkout, "deploy", capsys=capsys)
    assert (code, err) == (0, ""), err


def commit_new_code(branch: Branch) -> None:
    """The new code: the flow delivers customer names in small letters."""
    change_flow_file(branch.checkout, OLD_SHAPE, NEW_SHAPE, push=True)


def run_once(branch: Branch, deployment: str, fault) -> str:
    """Run a deployment of the branch on a real process worker; whose code it ran."""
    log = branch.folder / "worker.log"
    fault.watch(log)
    flow_run = local_prefect.run_deployment_once(
        f"fixture-flow/{deployment}",
        os.environ["FLOWS_WORK_POOL"],
        os.environ["PREFECT_API_URL"],
        log,
    )
    worker_log = log.read_text(encoding="utf-8")
    # Completed: the pull's check found a whole copy (a mix fails it).
    assert flow_run.state.is_completed(), worker_log
    assert "Pulled code using block" in worker_log or "Pulled code from" in worker_log
    with open(branch.delivered, encoding="utf-8") as delivered:
        names = {row["customer"] for row in csv.DictReader(delivered)}
    assert names, "the run delivered no order"
    if all(name.isupper() for name in names):
        return "old"
    assert all(name.islower() for name in names), names
    return "new"


@dataclass(frozen=True)
class DeadDeploy:
    """A deploy that died after `point`: a first deploy or a redeploy, and the commits
    of the old code (on a redeploy) and of the new."""

    point: str
    kind: str
    commits: dict[str, str]


def die_mid_deploy(branch: Branch, point: str, kind: str, capsys, fault) -> DeadDeploy:
    """Deploy (on a redeploy: the old code first), then the new code dying after
    `point`."""
    commits = {}
    if kind == "redeploy":
        deploy(branch, capsys)
        commits["old"] = branch.commit()
    commit_new_code(branch)
    commits["new"] = branch.commit()
    die_after(
        branch.checkout,
        DEPLOY_STEPS[point],
        "flows/fixture_flow.py",
        "deploy",
        log=branch.folder / f"deploy-dying-after-{point}.log",
        fault=fault,
    )
    return DeadDeploy(point, kind, commits)


def check_what_is_left(branch: Branch, dead: DeadDeploy, fault) -> None:
    """The copies the dead deploy left, each whole; the block and the deployment as
    LEFT_BY_A_DEAD_DEPLOY says; and a run of what is registered fetches the block's."""
    pointed, registered = LEFT_BY_A_DEAD_DEPLOY[dead.point, dead.kind]
    commits = dead.commits
    left = stored(branch)
    assert left.commits() == sorted(commit[:12] for commit in commits.values())
    assert left.whole == left.copies
    if pointed is None:
        assert left.pointer is None
    else:
        assert left.pointer in left.copies
        assert commit_of(left.pointer) == commits[pointed][:12]
    deployment = read_deployment(branch.deployment)
    if registered is None:
        assert deployment is None  # nothing registered: no run can start
        return
    assert deployment.version == commits[registered][:12]
    assert run_once(branch, branch.deployment, fault) == pointed


def outlive_the_dead_lease() -> None:
    """Let the lease the killed command held expire: prune never waits for one."""
    # Past it by two seconds: the API's clock, by which a lease ages, counts whole ones.
    time.sleep(DEAD_LEASE_SECONDS + 2)


def deploy_to_repair(branch: Branch, dead: DeadDeploy, capsys, fault) -> None:
    """Deploy the new code again: it must leave what a faultless deploy leaves. The
    fault's cost: how much longer it took than the faultless deploy after it."""
    started = time.monotonic()
    deploy(branch, capsys)
    repairing = time.monotonic() - started
    check_repaired(branch, dead.commits["new"])
    started = time.monotonic()
    deploy(branch, capsys)
    # Never below nothing: two faultless deploys differ by a tenth of a second or so.
    fault.cost(max(0.0, repairing - (time.monotonic() - started)))


def check_repaired(branch: Branch, commit: str) -> None:
    """One whole copy of `commit`, the block naming it, no other block, and the
    deployment registered with it."""
    after = stored(branch)
    assert after.copies == after.whole == [after.pointer], after
    assert after.commits() == [commit[:12]]
    assert blocks_of(branch.repository) == [branch.block]
    assert read_deployment(branch.deployment).version == commit[:12]


@pytest.mark.parametrize("point, kind", list(LEFT_BY_A_DEAD_DEPLOY))
def test_a_deploy_that_dies_halfway_runs_and_the_next_deploy_repairs_it(
    point, kind, branch, capsys, fault
):
    """Whatever step a deploy dies after, what is registered runs a whole copy, and
    the next deploy leaves one copy, its block, and nothing else."""
    fault.expect("recovered")
    dead = die_mid_deploy(branch, point, kind, capsys, fault)
    check_what_is_left(branch, dead, fault)

    deploy_to_repair(branch, dead, capsys, fault)


def test_a_redeploy_to_s3_that_dies_after_registering_runs_the_old_copy(
    s3_bucket, branch, capsys, fault
):
    """In a bucket as in a folder: registered but not switched, runs fetch the old
    copy whole, and the next deploy repairs it."""
    del s3_bucket  # FLOWS_STORAGE_ROOT in it, set before `branch` reads it
    fault.expect("recovered")
    dead = die_mid_deploy(branch, "registration", "redeploy", capsys, fault)
    check_what_is_left(branch, dead, fault)

    deploy_to_repair(branch, dead, capsys, fault)


@pytest.mark.parametrize("point", ["upload", "registration", "switch"])
def test_prune_removes_the_copy_a_dead_redeploy_left(
    point, branch, capsys, monkeypatch, fault
):
    """prune, not only the next deploy, removes the copy the block does not name; the
    one it names and the deployment stay."""
    fault.expect("recovered")
    die_mid_deploy(branch, point, "redeploy", capsys, fault)
    outlive_the_dead_lease()
    before = stored(branch)
    deployment = read_deployment(branch.deployment)

    code, _, err = run_repository_command(
        branch.checkout, "prune", capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, ""), err
    assert stored(branch) == Stored([before.pointer], [before.pointer], before.pointer)
    assert read_deployment(branch.deployment).updated == deployment.updated


def test_prune_removes_a_dead_first_deploy_of_a_branch_gone_from_origin(
    branch, capsys, monkeypatch, fault
):
    """A first deploy that died after its upload left a copy and nothing that names
    it; once the branch is gone from origin, prune removes it."""
    fault.expect("recovered")
    die_mid_deploy(branch, "upload", "first", capsys, fault)
    outlive_the_dead_lease()
    assert len(stored(branch).copies) == 1
    git(branch.checkout, "push", "-q", "origin", "--delete", BRANCH)

    code, _, err = run_repository_command(
        branch.checkout, "prune", capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, ""), err
    assert stored(branch) == Stored([], [], None)
    assert blocks_of(branch.repository) == []


# The steps of a delete-branch a death lands at: after the first of the branch's two
# deployments is deleted; before its storage is touched (every deployment deleted);
# after its copies are removed; after its block is deleted.
DELETE_STEPS = {
    "one-deployment-deleted": [
        "prefect.client.orchestration:PrefectClient.delete_deployment"
    ],
    "deployments-deleted": [
        "toolkit.deployer.storage.base:FlowStorage.remove",
        "--before",
    ],
    "copies-removed": ["toolkit.deployer.storage.base:FlowStorage._remove"],
    "block-deleted": ["toolkit.deployer.prefect_api:delete_block"],
}


def die_mid_delete_branch(branch: Branch, point: str, capsys, monkeypatch, fault):
    """Deploy the branch's two flows, then delete the branch dying at `point`."""
    add_second_flow(branch.checkout)
    code, _, err = run_repository_command(
        branch.checkout, "deploy-all", capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, ""), err
    assert len(branch.deployments()) == 2
    die_after(
        branch.checkout,
        *DELETE_STEPS[point],
        "flows/util.py",
        "delete-branch",
        BRANCH,
        log=branch.folder / "delete-branch-dying.log",
        fault=fault,
    )


def check_branch_gone(branch: Branch) -> None:
    """No deployment, copy or block of the branch is left."""
    assert branch.deployments() == []
    assert stored(branch) == Stored([], [], None)
    assert blocks_of(branch.repository) == []


@pytest.mark.parametrize("point", list(DELETE_STEPS))
def test_a_delete_branch_that_dies_halfway_is_finished_by_the_next(
    point, branch, capsys, monkeypatch, fault
):
    """A deployment left behind still runs its whole copy, a block left names a whole
    copy, and running delete-branch again removes whatever is left."""
    fault.expect("recovered")
    die_mid_delete_branch(branch, point, capsys, monkeypatch, fault)
    left = stored(branch)
    # A block left names a whole copy: a deploy of the branch that registers and
    # dies before its switch leaves runs that fetch what the block names.
    assert left.pointer is None or left.pointer in left.whole, left
    if point == "one-deployment-deleted":
        (remaining,) = branch.deployments()
        assert left.copies == left.whole == [left.pointer]
        assert run_once(branch, remaining, fault) == "old"  # the code never changed
    else:
        assert branch.deployments() == []

    code, _, err = run_repository_command(
        branch.checkout, "delete-branch", BRANCH, capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, ""), err
    check_branch_gone(branch)


def test_delete_branch_after_a_killed_deploy_leaves_nothing_of_it(
    branch, capsys, monkeypatch, fault
):
    """A deploy killed after registering holds the branch's lease; delete-branch takes
    it over once it expires, and leaves no deployment, copy, pointer or lease."""
    fault.expect("recovered")
    die_mid_deploy(branch, "registration", "first", capsys, fault)

    code, _, err = run_repository_command(
        branch.checkout, "delete-branch", BRANCH, capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, ""), err
    check_branch_gone(branch)


def test_a_delete_branch_waits_for_a_deploy_of_the_branch_under_way(
    branch, capsys, monkeypatch, fault
):
    """delete-branch holds the branch's lease: while a deploy holds it, one that waits
    no longer gives up with one line and deletes nothing (the deploy would register
    against a removed copy); once the deploy is done, it deletes what that made too."""
    fault.expect("failed clean")
    deploy(branch, capsys)
    before = stored(branch)
    deploys = Deploys(branch.checkout, branch.folder, fault)
    try:
        holder = deploys.launch("holder", pause_after_copy=True)
        deploys.go([holder])
        deploys.wait_for(holder, "paused")
        monkeypatch.setenv(SETTINGS["deploy_wait_seconds"].env_var, "1")
        code, _, err = run_repository_command(
            branch.checkout,
            "delete-branch",
            BRANCH,
            capsys=capsys,
            monkeypatch=monkeypatch,
        )
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: a deploy of branch {BRANCH} has held its lease")
        assert "nothing deleted: run it again when that deploy is done" in err
        assert branch.deployments() == [branch.deployment]
        assert stored(branch).pointer == before.pointer
        deploys.resume(holder)
        assert holder.finish()[0] == 0
    finally:
        deploys.stop_all()

    code, _, err = run_repository_command(
        branch.checkout, "delete-branch", BRANCH, capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, ""), err
    check_branch_gone(branch)


def test_prune_finds_the_storage_of_a_half_deleted_branch(
    branch, capsys, monkeypatch, fault
):
    """Deployments deleted, storage not: once the branch is gone from origin, prune
    removes its copies and block though no deployment names the branch any more."""
    fault.expect("recovered")
    die_mid_delete_branch(branch, "deployments-deleted", capsys, monkeypatch, fault)
    outlive_the_dead_lease()  # delete-branch, too, holds the branch's lease
    git(branch.checkout, "push", "-q", "origin", "--delete", BRANCH)

    code, _, err = run_repository_command(
        branch.checkout, "prune", capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, ""), err
    check_branch_gone(branch)


# The steps of a setup a death lands after: the work pool made (no queue, no block
# yet), and the first block saved (the password's, not yet the connection's that
# refers to it). What the next setup then reports, item by item.
SETUP_STEPS = {
    "work-pool": "prefect.client.orchestration:PrefectClient.create_work_pool",
    "password-block": "toolkit.deployer.setup:save_if_changed",
}
SETUP_REPAIRS = {
    "work-pool": ["unchanged"] * 2 + ["created"] * 4,
    "password-block": ["unchanged"] * 5 + ["created"],
}


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("point", list(SETUP_STEPS))
def test_a_setup_that_dies_halfway_is_finished_by_the_next(
    point, checkout, capsys, monkeypatch, fault
):
    """The next setup creates what is missing and nothing twice: one pool with both
    queues, and the connection refers to the password block the dead setup saved."""
    fault.expect("recovered")
    system = f"warehouse{secrets.token_hex(3)}"
    password = f"db-{secrets.token_urlsafe(12)}"
    fault.secret(password)
    monkeypatch.setenv(
        f"FLOWS_{system.upper()}_DATABASE_URL", "postgresql://reader@db/warehouse"
    )
    monkeypatch.setenv(f"FLOWS_{system.upper()}_DATABASE_PASSWORD", password)
    setup = ["setup", "--database", system, "--no-prompt"]
    die_after(
        checkout,
        SETUP_STEPS[point],
        "flows/util.py",
        *setup,
        log=checkout.parent / "setup-dying.log",
        fault=fault,
    )

    code, out, err = run_repository_command(
        checkout, *setup, capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, ""), err
    assert [line.rsplit(": ", 1)[1] for line in out.splitlines()] == SETUP_REPAIRS[
        point
    ], out
    assert workspace_of(system) == {
        "queues": ["default", "dev", "main"],
        "blocks": [f"{system}-database-main", f"{system}-database-main-password"],
        "password of the connection": f"{system}-database-main-password",
    }


def workspace_of(system: str) -> dict:
    """The test's work pool's queues, the blocks of `system`, and the block the
    database connection's password refers to."""

    async def read() -> dict:
        async with get_client() as client:
            pool = os.environ["FLOWS_WORK_POOL"]
            queues = await client.read_work_queues(work_pool_name=pool)
            documents = await client.read_block_documents(include_secrets=False)
            connection = await client.read_block_document_by_name(
                f"{system}-database-main",
                "flows-database-connection",
                include_secrets=False,
            )
        password = connection.block_document_references["password"]
        return {
            "queues": sorted(queue.name for queue in queues),
            "blocks": sorted(d.name for d in documents if d.name.startswith(system)),
            "password of the connection": password["block_document"]["name"],
        }

    return asyncio.run(read())
