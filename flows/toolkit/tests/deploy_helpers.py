"""Helpers for the deploy tests: call a flow file's command line, read the server."""

import asyncio
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

import pytest

import util
from toolkit.deployer import prefect_api
from toolkit.deployer.storage import MANIFEST_NAME

FLOW_NAME = "fixture-flow"


def run_command_line(
    checkout: Path,
    *args: str,
    capsys,
    flow_file: str = "fixture_flow.py",
    function: str = "fixture_flow",
):
    """Run `python3 flows/<flow_file> ARGS` in this process; (exit code, out, err)."""
    return call_command_line(
        lambda: util.run_flow_command_line_interface(
            str(checkout / "flows" / flow_file), function, list(args)
        ),
        capsys,
    )


def run_flow_script(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    """`python3 flows/fixture_flow.py ARGS` as a person runs it: a process of its own."""
    return run_script(checkout, "flows/fixture_flow.py", *args)


def run_script(checkout: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """`python3 SCRIPT ARGS` in the checkout, in a process of its own."""
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def deploy_with_registration_refused(checkout: Path, capsys, monkeypatch) -> None:
    """Add a file to flows/ and deploy while the API refuses the registration."""

    async def refuse(*_args, **_kwargs):
        raise RuntimeError("the API went away mid-deploy")

    monkeypatch.setattr(prefect_api, "register_deployment", refuse)
    (checkout / "flows" / "new_helper.py").write_text("VALUE = 2\n")
    with pytest.raises(RuntimeError, match="went away"):
        run_command_line(checkout, "deploy", capsys=capsys)


def call_command_line(call, capsys):
    """(exit code, stdout, stderr) of a command line function called in this process."""
    try:
        call()
        code = 0
    except SystemExit as leaving:
        code = leaving.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_deployment(deployment_name: str):
    """The deployment `fixture-flow/<deployment_name>`, or None."""

    async def read():
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name(
                    f"{FLOW_NAME}/{deployment_name}"
                )
            except ObjectNotFound:
                return None

    return asyncio.run(read())


def count_deployments() -> int:
    """How many deployments the server holds."""

    async def count():
        async with get_client() as client:
            return len(await client.read_deployments())

    return asyncio.run(count())


def work_pool_names() -> list[str]:
    """The names of the server's work pools, sorted."""

    async def read():
        async with get_client() as client:
            return sorted(pool.name for pool in await client.read_work_pools())

    return asyncio.run(read())


def read_block_basepath(block_name: str) -> str:
    """Where the storage block `block_name` points."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.filesystems import LocalFileSystem

    return LocalFileSystem.load(block_name).basepath


def stored_files(storage: Path) -> list[str]:
    """The files of flows/ in the one copy below a branch's `storage`, sorted."""
    (copy,) = storage.iterdir()  # one copy per branch once a deploy is done
    assert (copy / MANIFEST_NAME).is_file(), copy  # written last: a whole copy
    return sorted(
        path.relative_to(copy).as_posix()
        for path in copy.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME
    )


def read_flow_run_logs(flow_run_id) -> list[str]:
    """The messages the API holds for one flow run, oldest first."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read():
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            return [log.message for log in logs]

    return asyncio.run(read())
