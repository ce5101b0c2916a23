"""A deploy and a run's pull with flow storage in a folder against on S3 (moto).

    .venv/bin/python bench/storage.py [--repeat 5]

Starts its own Prefect server and S3-compatible server (moto) on 127.0.0.1, as the
tests do, and a throw-away git checkout of flows/ on a dev branch. Each deploy is the
whole `deploy` command in this process (plan, copy or upload, register, switch); each
pull is the deployment's own pull step, run as a flow run starts it, into an empty
folder. Prints the median seconds of each over --repeat, the files and bytes copied,
and the ratios `s3_deploy_over_local` and `s3_pull_over_local`. moto answers from
memory on this machine: a real store adds its network round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_environment  # noqa: F401  pylint: disable=unused-import

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

# pylint: disable=wrong-import-position
import s3fs  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.deployments.steps.core import run_steps  # noqa: E402

import local_prefect  # noqa: E402
from fixture_checkout import make_git_checkout  # noqa: E402
import services  # noqa: E402
import util  # noqa: E402

BRANCH = "bench-storage"
DEPLOYMENT = "fixture-flow/template | bench-storage | fixture_flow"


def timed_deploy(checkout: Path) -> float:
    """Seconds of one whole `deploy`, its output swallowed."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        util.run_flow_command_line_interface(
            str(checkout / "flows" / "fixture_flow.py"), "fixture_flow", ["deploy"]
        )
    return time.perf_counter() - started


async def _pull_steps() -> list:
    async with get_client() as client:
        return (await client.read_deployment_by_name(DEPLOYMENT)).pull_steps


def timed_pull(folder: Path) -> tuple[float, int, int]:
    """Seconds of the deployment's pull step into an empty folder; files, bytes."""
    steps = asyncio.run(_pull_steps())
    target = Path(tempfile.mkdtemp(dir=folder))
    here = os.getcwd()
    os.chdir(target)
    try:
        started = time.perf_counter()
        asyncio.run(run_steps(steps, print_function=lambda *_a, **_k: None))
        seconds = time.perf_counter() - started
    finally:
        os.chdir(here)
    sizes = [path.stat().st_size for path in target.rglob("*") if path.is_file()]
    shutil.rmtree(target)
    return seconds, len(sizes), sum(sizes)


def measure(checkout: Path, folder: Path, repeat: int) -> dict:
    """Median deploy and pull seconds with the storage settings now in force."""
    timed_deploy(checkout)  # the first one creates the pool and imports the rest
    deploys = [timed_deploy(checkout) for _ in range(repeat)]
    pulls = [timed_pull(folder) for _ in range(repeat)]
    return {
        "deploy": statistics.median(deploys),
        "pull": statistics.median(seconds for seconds, _, _ in pulls),
        "files": pulls[-1][1],
        "bytes": pulls[-1][2],
    }


def main(arguments: list[str]) -> None:
    """The command line above."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args(arguments)
    folder = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        with local_prefect.serving(
            folder / "prefect", services.free_port()
        ), services.running_s3_server() as s3_server:
            os.environ.update(
                FLOWS_WORK_POOL="bench-process",
                FLOWS_WORK_POOL_TYPE="process",
                FLOWS_REPO_NAME="acme-data-flows-template",
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
            )
            checkout = make_git_checkout(folder, BRANCH)
            os.environ["FLOWS_STORAGE_ROOT"] = str(folder / "storage")
            local = measure(checkout, folder, options.repeat)
            s3fs.S3FileSystem(
                client_kwargs={"endpoint_url": s3_server.endpoint_url}
            ).mkdir("bench")
            os.environ["FLOWS_STORAGE_ROOT"] = "s3://bench/flows"
            os.environ["FLOWS_S3_ENDPOINT_URL"] = s3_server.endpoint_url
            on_s3 = measure(checkout, folder, options.repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"copy of flows/: {local['files']} files, {local['bytes']} bytes")
    for name, figures in (("local", local), ("s3", on_s3)):
        print(
            f"{name:6} deploy {figures['deploy']:.2f} s  pull {figures['pull']:.3f} s"
        )
    print(f"s3_deploy_over_local={on_s3['deploy'] / local['deploy']:.2f}")
    print(f"s3_pull_over_local={on_s3['pull'] / local['pull']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
