"""Deploys of one branch take turns under its lease; stale copies are removed.

Deploys start as separate processes (deploy_on_signal.py), against the session's
Prefect server, with flow storage in a folder and on S3 (moto). They wait for a signal
after their imports, so that several reach the lease at the same moment, and one can
be paused while it holds the lease: to deploy another branch meanwhile, to see a
deploy of the same branch give up, to run prune, or to kill it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_NAME, S3Bucket, git
from deploy_helpers import read_block_basepath, read_deployment, run_command_line
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from test_repository_commands import run_repository_command

from toolkit.deployer import lease
from toolkit.deployer.naming import pointer_block_name, relative_storage_path
from toolkit.deployer.naming import branch_slug
from toolkit.deployer.storage import MANIFEST_NAME

LAUNCHER = Path(__file__).with_name("deploy_on_signal.py")
# Long enough for five deploys' imports on two cores, side by side.
START_TIMEOUT_SECONDS = 180
DEPLOY_TIMEOUT_SECONDS = 300
# A stale copy as a killed deploy, or a release before the lease, leaves one.
STALE_COPY = "20240101T000000Z-0123456789ab-a1b2c3"
HALF_WRITTEN_COPY = "20240101T000001Z-0123456789ab-d4e5f6"

pytestmark = pytest.mark.usefixtures("prefect_api_url")


@dataclass
class Store:
    """Flow storage as the test sees it, without the deployer's code."""

    root: str
    bucket: S3Bucket | None

    def copies(self, relative: str) -> list[str]:
        """The names of the copies below a branch's location, sorted."""
        if self.bucket is None:
            folder = Path(self.root) / relative
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        depth = len(relative.split("/"))
        return sorted({key.split("/")[depth] for key in self.bucket.keys(relative)})

    def is_whole(self, relative: str, copy: str) -> bool:
        """Whether the copy has its manifest, written last."""
        if self.bucket is None:
            return (Path(self.root) / relative / copy / MANIFEST_NAME).is_file()
        return f"{relative}/{copy}/{MANIFEST_NAME}" in self.bucket.keys(relative)

    def pointed_copy(self, relative: str) -> str:
        """The name of the copy the branch's pointer block names."""
        block = pointer_block_name(relative)
        if self.bucket is None:
            return Path(read_block_basepath(block)).name
        # pylint: disable-next=import-outside-toplevel
        from prefect.filesystems import RemoteFileSystem

        return RemoteFileSystem.load(block).basepath.rstrip("/").rsplit("/", 1)[1]

    def plant(self, relative: str, copy: str, whole: bool = True) -> None:
        """A copy nothing points at: whole, or as an upload cut short left it."""
        files = {"fixture_flow.py": b"print('stale')\n"}
        if whole:
            files[MANIFEST_NAME] = b"0  fixture_flow.py\n"
        if self.bucket is None:
            folder = Path(self.root) / relative / copy
            folder.mkdir(parents=True)
            for name, data in files.items():
                (folder / name).write_bytes(data)
            return
        prefix = f"{self.root.removeprefix('s3://')}/{relative}/{copy}"
        self.bucket.filesystem().pipe(
            {f"{prefix}/{name}": data for name, data in files.items()}
        )


@pytest.fixture(params=["folder", "s3"])
def store(request) -> Store:
    """The flow storage of the test: a folder, or a bucket on moto."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return Store(bucket.root, bucket)
    return Store(os.environ["FLOWS_STORAGE_ROOT"], None)


@dataclass
class Deploy:
    """A deploy running in a process of its own, and the files of its output."""

    name: str
    process: subprocess.Popen
    out: Path
    err: Path

    def finish(self) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once it has ended."""
        code = self.process.wait(timeout=DEPLOY_TIMEOUT_SECONDS)
        return code, self.out.read_text("utf-8"), self.err.read_text("utf-8")


class Deploys:
    """Deploys of the checkout started by this test, on signals in `signals`."""

    def __init__(self, checkout: Path, tmp_path: Path, fault):
        self.checkout = checkout
        self.signals = tmp_path / "signals"
        self.signals.mkdir()
        self.logs = tmp_path / "deploy-output"
        self.logs.mkdir()
        self.fault = fault
        self.started: list[Deploy] = []

    def launch(self, name: str, pause_after_copy: bool = False) -> Deploy:
        """Start a deploy: it imports, says ready, and waits for go."""
        out, err = self.logs / f"{name}.out", self.logs / f"{name}.err"
        self.fault.watch(out)
        self.fault.watch(err)
        command = [sys.executable, str(LAUNCHER), str(self.checkout / "flows")]
        command += [str(self.signals), name]
        command += ["--pause-after-copy"] if pause_after_copy else []
        with open(out, "w", encoding="utf-8") as stdout, open(
            err, "w", encoding="utf-8"
        ) as stderr:
            process = subprocess.Popen(  # pylint: disable=consider-using-with
                command, cwd=self.checkout, stdout=stdout, stderr=stderr
            )
        deploy = Deploy(name, process, out, err)
        self.started.append(deploy)
        return deploy

    def start_together(self, names: list[str]) -> tuple[list[Deploy], float]:
        """Launch the deploys, and once all are ready tell them to go; (the deploys,
        the monotonic time of the go)."""
        deploys = [self.launch(name) for name in names]
        return deploys, self.go(deploys)

    def go(self, deploys: list[Deploy]) -> float:
        """Once every one of the deploys is ready, tell them all to go; the time."""
        for deploy in deploys:
            self.wait_for(deploy, "ready")
        for deploy in deploys:
            (self.signals / f"{deploy.name}.go").touch()
        return time.monotonic()

    def wait_for(self, deploy: Deploy, signal: str) -> None:
        """Until the deploy makes NAME.signal; its output if it ends first."""
        flag = self.signals / f"{deploy.name}.{signal}"
        give_up = time.monotonic() + START_TIMEOUT_SECONDS
        while not flag.exists():
            if deploy.process.poll() is not None or time.monotonic() > give_up:
                pytest.fail(f"{deploy.name} never {signal}: {deploy.finish()}")
            time.sleep(0.05)

    def resume(self, deploy: Deploy) -> None:
        """Let a paused deploy go on."""
        (self.signals / f"{deploy.name}.resume").touch()

    def stop_all(self) -> None:
        """End every deploy still running (a failed test must leave none)."""
        for deploy in self.started:
            if deploy.process.poll() is None:
                deploy.process.kill()
                deploy.process.wait()


@pytest.fixture
def deploys(checkout, tmp_path, fault):
    """Deploys of the checkout in processes of their own, none left running."""
    started = Deploys(checkout, tmp_path, fault)
    yield started
    started.stop_all()


def lease_record(relative: str):
    """The branch's lease record in the API, or None."""

    async def read():
        async with get_client() as client:
            try:
                return await client.read_block_document_by_name(
                    pointer_block_name(relative), lease.LEASE_TYPE
                )
            except ObjectNotFound:
                return None

    return asyncio.run(read())


def dev_branch(checkout: Path, branch: str) -> str:
    """Switch the checkout to a new branch; its storage location, relative."""
    git(checkout, "switch", "-q", "-c", branch)
    return relative_storage_path(REPO_NAME, "dev", branch_slug(branch))


def assert_one_whole_copy_pointed_at(store: Store, relative: str) -> str:
    """Exactly one copy is left, whole, and the pointer names it; no lease is held."""
    copies = store.copies(relative)
    assert copies == [store.pointed_copy(relative)], copies
    assert store.is_whole(relative, copies[0])
    assert lease_record(relative) is None
    return copies[0]


def report(line: str, capsys) -> None:
    """A figure of the test, shown however pytest captures output."""
    with capsys.disabled():
        print(f"\n{line}")


def deploy_alone(deploys: Deploys, name: str) -> float:
    """Seconds one deploy takes from its go, with no other under way."""
    (alone,), go = deploys.start_together([name])
    assert alone.finish()[0] == 0, alone.finish()
    return time.monotonic() - go


@pytest.mark.parametrize("count", [2, 5])
def test_concurrent_deploys_of_one_branch_leave_one_copy(
    count, store, deploys, fault, capsys
):
    """Deploys of one branch started at the same moment all succeed, one after
    another; one whole copy stays, the pointer names it, and no lease is left."""
    fault.expect("recovered")
    relative = dev_branch(deploys.checkout, "feature/together")
    started, go = deploys.start_together([f"deploy-{i}" for i in range(count)])
    results = [deploy.finish() for deploy in started]
    together_seconds = time.monotonic() - go

    codes = [code for code, _, _ in results]
    assert codes == [0] * count, results
    for _, out, err in results:
        assert "Deployed fixture-flow/" in out
        assert "Traceback" not in err and "error:" not in err, err
    kept = assert_one_whole_copy_pointed_at(store, relative)
    assert (
        read_deployment(
            f"demo | {branch_slug('feature/together')} | fixture_flow"
        ).version
        == git(deploys.checkout, "rev-parse", "HEAD")[:12]
    )
    report(
        f"{count} concurrent deploys ({'s3' if store.bucket else 'folder'}): exit "
        f"codes {codes}, copies left {len(store.copies(relative))}, orphans "
        f"{len(store.copies(relative)) - 1}, {together_seconds:.1f} s from the go "
        "to the last exit",
        capsys,
    )

    alone_seconds = deploy_alone(deploys, "alone")
    assert assert_one_whole_copy_pointed_at(store, relative) != kept
    fault.cost(together_seconds - alone_seconds)
    report(f"  the next deploy alone: {alone_seconds:.1f} s", capsys)


def test_two_branches_deploy_at_once_without_waiting(
    checkout, deploys, fault, monkeypatch
):
    """A deploy of another branch runs to its end while the first holds its own
    lease: it never waits for it (it may not wait at all here), and the first
    lease's record stays the same throughout."""
    fault.expect("recovered")
    first_relative = dev_branch(checkout, "feature/first")
    first = deploys.launch("first", pause_after_copy=True)
    deploys.go([first])
    deploys.wait_for(first, "paused")
    held_by_first = lease_record(first_relative)
    assert held_by_first is not None

    second_relative = dev_branch(checkout, "feature/second")
    monkeypatch.setenv("FLOWS_DEPLOY_WAIT_SECONDS", "0")
    (second,), _ = deploys.start_together(["second"])
    assert second.finish()[0] == 0, second.finish()
    monkeypatch.delenv("FLOWS_DEPLOY_WAIT_SECONDS")

    # The second began and ended inside the first one's holding of its lease.
    still_held = lease_record(first_relative)
    assert (still_held.id, still_held.data["token"]) == (
        held_by_first.id,
        held_by_first.data["token"],
    )
    assert first.process.poll() is None
    store = Store(os.environ["FLOWS_STORAGE_ROOT"], None)
    assert_one_whole_copy_pointed_at(store, second_relative)
    deploys.resume(first)
    assert first.finish()[0] == 0, first.finish()
    assert_one_whole_copy_pointed_at(store, first_relative)


def test_a_deploy_gives_up_on_a_held_branch_with_one_line(
    checkout, deploys, fault, capsys, monkeypatch
):
    """While a deploy holds its branch's lease, another deploy of that branch waits
    FLOWS_DEPLOY_WAIT_SECONDS, then exits 2 with one line naming the branch and how
    long the lease has been held; it changes nothing."""
    fault.expect("failed clean")
    relative = dev_branch(checkout, "feature/busy")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    store = Store(os.environ["FLOWS_STORAGE_ROOT"], None)
    before = store.pointed_copy(relative)
    holder = deploys.launch("holder", pause_after_copy=True)
    deploys.go([holder])
    deploys.wait_for(holder, "paused")
    copies_while_held = store.copies(relative)

    monkeypatch.setenv("FLOWS_DEPLOY_WAIT_SECONDS", "1")
    code, out, err = run_command_line(checkout, "deploy", capsys=capsys)

    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: another deploy of branch feature/busy has held ")
    assert f"pid {holder.process.pid}); this one gave up after waiting 1 s" in err
    assert "FLOWS_DEPLOY_WAIT_SECONDS" in err and "Traceback" not in err
    assert "waiting for another deploy of branch feature/busy" in out
    assert store.copies(relative) == copies_while_held
    assert store.pointed_copy(relative) == before
    deploys.resume(holder)
    assert holder.finish()[0] == 0
    assert assert_one_whole_copy_pointed_at(store, relative) != before


def test_delete_waits_for_a_deploy_of_its_branch_then_gives_up_with_one_line(
    checkout, deploys, fault, capsys, monkeypatch
):
    """`delete` of one flow holds the branch's lease as deploy does: while a deploy
    holds it, delete waits FLOWS_DEPLOY_WAIT_SECONDS, then exits 2 with one line and
    deletes nothing (the deployment and every copy stay); once the deploy is done,
    delete removes the deployment and the branch's storage."""
    fault.expect("failed clean")
    relative = dev_branch(checkout, "feature/deleting")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    name = f"demo | {branch_slug('feature/deleting')} | fixture_flow"
    store = Store(os.environ["FLOWS_STORAGE_ROOT"], None)
    holder = deploys.launch("holder", pause_after_copy=True)
    deploys.go([holder])
    deploys.wait_for(holder, "paused")
    copies_while_held = store.copies(relative)

    monkeypatch.setenv("FLOWS_DEPLOY_WAIT_SECONDS", "1")
    code, out, err = run_command_line(checkout, "delete", capsys=capsys)

    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: a deploy of branch feature/deleting has held its ")
    assert "delete gave up after waiting 1 s" in err and "nothing deleted" in err
    assert "waiting for another deploy of branch feature/deleting" in out
    assert read_deployment(name) is not None
    assert store.copies(relative) == copies_while_held
    deploys.resume(holder)
    assert holder.finish()[0] == 0
    code, out, err = run_command_line(checkout, "delete", capsys=capsys)
    assert code == 0, err
    assert read_deployment(name) is None
    assert store.copies(relative) == [] and lease_record(relative) is None


def test_a_lease_left_by_a_killed_deploy_expires(store, deploys, fault, monkeypatch):
    """A deploy killed (SIGKILL) while it holds the lease, its copy written: the next
    deploy waits until the lease expires (FLOWS_DEPLOY_LEASE_SECONDS), then deploys
    and removes the killed one's copy."""
    fault.expect("recovered")
    relative = dev_branch(deploys.checkout, "feature/killed")
    alone_seconds = deploy_alone(deploys, "before")
    monkeypatch.setenv("FLOWS_DEPLOY_LEASE_SECONDS", "5")  # the killed deploy's lease
    killed = deploys.launch("killed", pause_after_copy=True)
    monkeypatch.delenv("FLOWS_DEPLOY_LEASE_SECONDS")
    deploys.go([killed])
    deploys.wait_for(killed, "paused")
    after = deploys.launch("after")
    deploys.wait_for(after, "ready")  # its imports done: it reaches the lease at once
    killed.process.kill()
    killed.process.wait()
    assert len(store.copies(relative)) == 2  # the pointed one and the killed one's
    assert lease_record(relative) is not None

    go = deploys.go([after])
    code, out, err = after.finish()

    assert code == 0, err
    assert f"pid {killed.process.pid} has held its lease" in out  # it was blocked
    assert_one_whole_copy_pointed_at(store, relative)
    fault.cost(time.monotonic() - go - alone_seconds)


def test_stale_copies_are_removed_by_the_next_deploy(store, checkout, fault, capsys):
    """Copies nothing points at, whole or cut short, planted before a deploy: the
    deploy leaves only its own."""
    fault.expect("recovered")
    relative = dev_branch(checkout, "feature/stale")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    store.plant(relative, STALE_COPY)
    store.plant(relative, HALF_WRITTEN_COPY, whole=False)
    assert len(store.copies(relative)) == 3

    code, _, err = run_command_line(checkout, "deploy", capsys=capsys)

    assert (code, err) == (0, ""), err
    assert STALE_COPY not in assert_one_whole_copy_pointed_at(store, relative)


def deploy_with_stale_copies(store: Store, checkout: Path, capsys) -> list[str]:
    """Deploy main and a pushed branch, and plant a stale copy below each and below
    a branch folder that nothing explains; the three locations, relative."""
    main, live, ghost = (
        relative_storage_path(os.environ["FLOWS_REPO_NAME"], stage, slug)
        for stage, slug in [
            ("main", "main"),
            ("dev", branch_slug("feature/live")),
            ("dev", "ghost"),
        ]
    )
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    git(checkout, "switch", "-q", "-c", "feature/live")
    git(checkout, "push", "-q", "origin", "feature/live")
    assert run_command_line(checkout, "deploy", capsys=capsys)[0] == 0
    for relative in (main, live, ghost):
        store.plant(relative, STALE_COPY)
    return [main, live, ghost]


def test_prune_removes_stale_copies_and_branch_folders_nothing_explains(
    store, deploys, fault, capsys, monkeypatch
):
    """prune removes the copies no pointer names (main's too), and a branch folder
    with no deployment whose branch origin lacks; a branch a deploy holds (a first
    deploy of a branch not pushed yet, say) is skipped and left whole."""
    fault.expect("recovered")
    # A repository of this test's own: prune looks at every branch of its repository.
    monkeypatch.setenv("FLOWS_REPO_NAME", "acme-data-flows-stale")
    main, live, ghost = deploy_with_stale_copies(store, deploys.checkout, capsys)
    git(deploys.checkout, "switch", "-q", "-c", "unpushed")
    unpushed = relative_storage_path("acme-data-flows-stale", "dev", "unpushed")
    first_deploy = deploys.launch("unpushed", pause_after_copy=True)
    deploys.go([first_deploy])
    deploys.wait_for(first_deploy, "paused")

    code, out, _ = run_repository_command(
        deploys.checkout, "prune", "--dry-run", capsys=capsys, monkeypatch=monkeypatch
    )
    root = store.root.rstrip("/")
    skipped = f"skipped {root}/{unpushed}: a deploy of it holds its lease ("
    assert code == 0
    assert sorted(line for line in out.splitlines() if line.startswith("would")) == [
        f"would delete stale copy {root}/{live}/{STALE_COPY}",
        f"would delete stale copy {root}/{main}/{STALE_COPY}",
        f"would delete storage {root}/{ghost}",
    ]
    assert (
        [line for line in out.splitlines() if not line.startswith("would")]
        == [line for line in out.splitlines() if line.startswith(skipped)]
        != []
    )
    assert STALE_COPY in store.copies(main)

    code, out, _ = run_repository_command(
        deploys.checkout, "prune", capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 0 and skipped in out
    assert store.copies(ghost) == []
    for relative in (main, live):
        assert_one_whole_copy_pointed_at(store, relative)
    assert read_deployment("stale | main | fixture_flow") is not None
    assert len(store.copies(unpushed)) == 1
    deploys.resume(first_deploy)
    assert first_deploy.finish()[0] == 0
    assert_one_whole_copy_pointed_at(store, unpushed)
