"""What `deploy-all` costs with 1 and with 10 flow files: one copy of flows/ per branch.

    .venv/bin/python bench/deploy_all.py [--repeat 3]

Starts its own Prefect server on 127.0.0.1 and deploys a checkout of the toolkit with
its fixture flow, copied into 1 and then 10 flow files, to flow storage in a folder.
`deploy-all` plans every flow, writes one copy, registers every deployment against it
and switches the branch's block once. The baseline, in the same process, is what
deploy-all did before: one `deploy` per flow file, each writing a whole copy. Prints
the medians (in-process, after imports) and `ten_over_one`, `per_flow_over_deploy_all`.
"""

from __future__ import annotations

import argparse
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

# pylint: disable=wrong-import-position

import local_prefect  # noqa: E402
import services  # noqa: E402
from fixture_checkout import FIXTURE_FLOW, make_git_checkout  # noqa: E402
from toolkit import cli  # noqa: E402
from toolkit.deployer.flow_file import find_flow_files  # noqa: E402

BRANCH = "bench-deploy-all"


def add_flow_files(checkout: Path, count: int) -> None:
    """Copies of the fixture flow until flows/ holds `count` flow files."""
    flows = checkout / "flows"
    source = (flows / FIXTURE_FLOW[0]).read_text()
    for number in range(2, count + 1):
        (flows / f"flow_{number:02d}.py").write_text(source)


def quietly(call) -> float:
    """Seconds of `call()`, its output swallowed."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        call()
    return time.perf_counter() - started


def deploy_all(checkout: Path) -> float:
    """Seconds of one `python3 flows/util.py deploy-all`, in this process."""
    cli.FLOWS_DIR = checkout / "flows"
    return quietly(lambda: cli.run_repository_command_line_interface(["deploy-all"]))


def deploy_each(checkout: Path) -> float:
    """Seconds of one `deploy` per flow file: the baseline."""
    flow_files = find_flow_files(checkout / "flows")

    def deploy_every_file():
        for path, function in flow_files:
            cli.run_flow_command_line_interface(str(path), function, ["deploy"])

    return quietly(deploy_every_file)


def median_seconds(measure, checkout: Path, repeat: int) -> float:
    """The median of `repeat` runs after one warm-up run."""
    measure(checkout)
    return statistics.median(measure(checkout) for _ in range(repeat))


def main(arguments: list[str]) -> None:
    """The command line above."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(arguments)
    folder = Path(tempfile.mkdtemp(prefix="bench-deploy-all-"))
    try:
        with local_prefect.serving(folder / "prefect", services.free_port()):
            os.environ.update(
                FLOWS_WORK_POOL="bench-process",
                FLOWS_WORK_POOL_TYPE="process",
                FLOWS_REPO_NAME="acme-data-flows-bench",
                FLOWS_STORAGE_ROOT=str(folder / "storage"),
            )
            checkout = make_git_checkout(folder, BRANCH)
            # As `python3 flows/util.py` has it: the flows' own modules importable.
            sys.path.insert(0, str(checkout / "flows"))
            one = median_seconds(deploy_all, checkout, options.repeat)
            add_flow_files(checkout, 10)
            ten = median_seconds(deploy_all, checkout, options.repeat)
            each = median_seconds(deploy_each, checkout, options.repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"deploy-all, 1 flow file    {one:.2f} s")
    print(f"deploy-all, 10 flow files  {ten:.2f} s (one copy)")
    print(f"deploy per file, 10 files  {each:.2f} s (ten copies: the baseline)")
    print(f"ten_over_one={ten / one:.2f} per_flow_over_deploy_all={each / ten:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
