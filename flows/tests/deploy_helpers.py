"""Helpers for the deploy tests: call a flow file's command line, read the server."""

import asyncio
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

import util

FLOW_NAME = "example-flow"


def run_command_line(
    checkout: Path,
    *args: str,
    capsys,
    flow_file: str = "example_flow.py",
    function: str = "example_flow",
):
    """Run `python3 flows/<flow_file> ARGS` in this process; (exit code, out, err)."""
    return call_command_line(
        lambda: util.run_flow_command_line_interface(
            str(checkout / "flows" / flow_file), function, list(args)
        ),
        capsys,
    )


def run_flow_script(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    """`python3 flows/example_flow.py ARGS` as a person runs it: a process of its own."""
    return subprocess.run(
        [sys.executable, "flows/example_flow.py", *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


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
    """The deployment `example-flow/<deployment_name>`, or None."""

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


def read_block_basepath(block_name: str) -> str:
    """Where the storage block `block_name` points."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.filesystems import LocalFileSystem

    return LocalFileSystem.load(block_name).basepath


def stored_files(storage: Path) -> list[str]:
    """Every file below `storage`, relative, sorted."""
    return sorted(
        path.relative_to(storage).as_posix()
        for path in storage.rglob("*")
        if path.is_file()
    )
