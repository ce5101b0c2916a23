"""What a developer waits for: `python3 flows/x.py deploy` against Prefect's own deploy.

    .venv/bin/python bench/deploy.py [--before v1.7.2] [--rounds 7]

Starts its own Prefect server on 127.0.0.1 and makes two git checkouts of the
toolkit's fixture flow: one with the toolkit of the release --before, one with the
working tree's. Each round deploys the same flow three ways, each in a fresh process
timed from its start to its end, in an order that turns every round:
- `python3 flows/fixture_flow.py deploy` with the release's toolkit (before);
- the same with the working tree's toolkit (after);
- `prefect --no-prompt deploy flows/fixture_flow.py:fixture_flow` (the baseline),
  which registers the deployment only: no copy of flows/, no lease, no checks.
One warm-up round is not counted. Then each toolkit deploys --rounds times more in a
process that marks where its time goes: interpreter start, the flow file's imports
(the same for every flow run), the deploy command itself with its calls to the
Prefect API, and the exit after it. Prints the medians, and last the line
`prefect_s=P before_s=B after_s=A ratio_before=B/P ratio_after=A/P`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_environment  # noqa: F401  pylint: disable=unused-import

# pylint: disable=wrong-import-position

import local_prefect  # noqa: E402
import services  # noqa: E402
from fixture_checkout import FIXTURE_FLOW, make_git_checkout  # noqa: E402
from imports import release_flows  # noqa: E402

POOL = "bench-process"
FLOW_FILE = f"flows/{FIXTURE_FLOW[0]}"

# Runs the flow file as `python3 flows/x.py deploy` does, and writes the moments its
# time divides at (epoch seconds) and each API call to the file $BENCH_PHASES_FILE.
MARK_PHASES = """
import atexit, json, os, runpy, sys, time
marks = {"started": time.time()}
flow_file = sys.argv[1]
sys.argv = [flow_file, "deploy"]
sys.path.insert(0, os.path.dirname(os.path.abspath(flow_file)))

def write_marks():
    with open(os.environ["BENCH_PHASES_FILE"], "w") as out:
        json.dump(marks, out)

atexit.register(write_marks)  # the first registered runs last
import toolkit.cli

command_line = toolkit.cli.run_flow_command_line_interface
def marked_command_line(*arguments, **options):
    marks["command"] = time.time()
    import httpx
    send = httpx.AsyncClient.send
    async def timed_send(client, request, *more, **options_of_send):
        begun = time.perf_counter()
        try:
            return await send(client, request, *more, **options_of_send)
        finally:
            marks.setdefault("api", []).append(time.perf_counter() - begun)
    httpx.AsyncClient.send = timed_send
    try:
        return command_line(*arguments, **options)
    finally:
        marks["returned"] = time.time()
toolkit.cli.run_flow_command_line_interface = marked_command_line
runpy.run_path(flow_file, run_name="__main__")
"""


def checkout_with_toolkit(folder: Path, branch: str, release: str | None) -> Path:
    """A git checkout of the fixture flow on `branch`, with the toolkit and util.py
    of `release` (the working tree's when None)."""
    checkout = make_git_checkout(folder / branch, branch)
    if release is not None:
        flows = release_flows(release, folder / f"{branch}-release")
        shutil.rmtree(checkout / "flows" / "toolkit")
        shutil.copytree(flows / "toolkit", checkout / "flows" / "toolkit")
        shutil.copy(flows / "util.py", checkout / "flows" / "util.py")
        identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
        for command in (["add", "-A"], [*identity, "commit", "-q", "-m", release]):
            subprocess.run(["git", *command], cwd=checkout, check=True)
    return checkout


def seconds_of(command: list[str], checkout: Path, environment: dict) -> float:
    """Wall seconds of `command` in `checkout`, from its start to its end."""
    started = time.perf_counter()
    subprocess.run(
        command,
        cwd=checkout,
        env=environment,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def phases_of(checkout: Path, environment: dict, scratch: Path) -> dict:
    """One deploy in `checkout`, divided: start, imports, command, its API, exit."""
    marks_file = scratch / "phases.json"
    started = time.time()
    subprocess.run(
        [sys.executable, "-c", MARK_PHASES, FLOW_FILE],
        cwd=checkout,
        env={**environment, "BENCH_PHASES_FILE": str(marks_file)},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ended = time.time()
    marks = json.loads(marks_file.read_text())
    return {
        "start": marks["started"] - started,
        "imports": marks["command"] - marks["started"],
        "command": marks["returned"] - marks["command"],
        "api": sum(marks["api"]),
        "api_calls": len(marks["api"]),
        "exit": ended - marks["returned"],
        "total": ended - started,
    }


def measure(before: str, rounds: int, folder: Path) -> tuple[dict, dict]:
    """({way: [seconds]}, {copy: [phases]}) for the three ways and the two copies."""
    checkouts = {
        "before": checkout_with_toolkit(folder, "bench-before", before),
        "after": checkout_with_toolkit(folder, "bench-after", None),
    }
    environment = {
        **os.environ,
        "FLOWS_WORK_POOL": POOL,
        "FLOWS_WORK_POOL_TYPE": "process",
        "FLOWS_REPO_NAME": "acme-data-flows-bench",
        "FLOWS_STORAGE_ROOT": str(folder / "storage"),
    }
    prefect = [local_prefect.PREFECT_EXECUTABLE, "--no-prompt", "deploy"]
    prefect += [f"{FLOW_FILE}:{FIXTURE_FLOW[1]}", "-n", "bench-prefect", "-p", POOL]
    ways = {
        "before": ([sys.executable, FLOW_FILE, "deploy"], checkouts["before"]),
        "after": ([sys.executable, FLOW_FILE, "deploy"], checkouts["after"]),
        "prefect": (prefect, checkouts["after"]),
    }
    order = list(ways)
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    for number in range(rounds + 1):
        for way in order[number % 3 :] + order[: number % 3]:
            taken = seconds_of(*ways[way], environment)
            if number:  # the first round warms the server, the caches and the pool
                seconds[way].append(taken)
    phases: dict[str, list[dict]] = {copy: [] for copy in checkouts}
    for _, copy in itertools.product(range(rounds), checkouts):
        phases[copy].append(phases_of(checkouts[copy], environment, folder))
    return seconds, phases


def main(arguments: list[str]) -> None:
    """The command line above."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", default="v1.7.2", help="the release to compare")
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args(arguments)
    folder = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    try:
        with local_prefect.serving(folder / "prefect", services.free_port()):
            seconds, phases = measure(options.before, options.rounds, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    median = {way: statistics.median(taken) for way, taken in seconds.items()}
    print(f"one flow deployed, median of {options.rounds} alternating rounds:")
    print(f"  prefect --no-prompt deploy      {median['prefect']:5.2f} s")
    for way, label in (("before", options.before), ("after", "working tree")):
        ratio = median[way] / median["prefect"]
        print(f"  flows/x.py deploy, {label:12} {median[way]:5.2f} s  {ratio:.2f}x")
    print("where a deploy's time goes (median seconds):")
    columns = ("start", "imports", "command", "api", "api_calls", "exit", "total")
    print(f"  {'toolkit':12}" + "".join(f"{column:>10}" for column in columns))
    for copy, label in (("before", options.before), ("after", "working tree")):
        figures = [
            statistics.median(run[column] for run in phases[copy]) for column in columns
        ]
        print(f"  {label:12}" + "".join(f"{figure:10.2f}" for figure in figures))
    print(
        f"prefect_s={median['prefect']:.2f} before_s={median['before']:.2f} "
        f"after_s={median['after']:.2f} "
        f"ratio_before={median['before'] / median['prefect']:.2f} "
        f"ratio_after={median['after'] / median['prefect']:.2f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
