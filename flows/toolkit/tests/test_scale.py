"""Two process workers on one pool share a deployment's runs, pulling the code from S3.

Each worker starts in a folder of its own that is not the repository, as on another
machine; the runs last over 10 s each, so one worker alone (limit 1) cannot take them
all while the other idles.
"""

import asyncio
import os
import re
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from conftest import git
from deploy_helpers import run_command_line

import local_prefect

# A flow file of the test's own: it holds its worker for over 10 s, then writes one
# file through the toolkit's delivery (whole, or not at all).
SLOW_FLOW_FILE = "slow_flow.py"
SLOW_FLOW_SOURCE = '''"""Sleeps, then delivers one CSV file: a run that holds its worker a while."""

import time

import pandas as pd
from prefect import flow

import util
from toolkit import connections
from toolkit.delivery import deliver_frame

ROWS = 5000

DEPLOYMENT = util.DeploymentSettings(cpu_request="500m", memory_request="1Gi")


@flow
def slow_flow(run_number: int = 0, seconds: float = 11) -> int:
    """Sleep `seconds`, then write run_<n>.csv of ROWS rows to the dev folder."""
    time.sleep(seconds)
    frame = pd.DataFrame({"run": [run_number] * ROWS, "row": range(ROWS)})
    sink = connections.sink_for("scale", "dev")
    return deliver_frame(sink, frame, f"run_{run_number:02d}.csv").rows


if __name__ == "__main__":
    util.run_flow_command_line_interface(__file__, "slow_flow")
'''
SLOW_FLOW_ROWS = 5000
RUNS = 8
WORKERS = ("scale-worker-a", "scale-worker-b")
ALL_DONE_TIMEOUT_SECONDS = 240
# A worker logs this once the run is its own; a worker that lost the race for a run
# logs "Aborted submission" instead.
RUN_SUBMITTED = re.compile(r"Completed submission of flow run '([0-9a-f-]+)'")
PROCESS_EXITED = re.compile(r"Process (\d+) exited cleanly")


def deploy_slow_flow(checkout: Path, branch: str, capsys) -> str:
    """Commit the slow flow on `branch`, deploy it; its `flow/deployment` name."""
    git(checkout, "switch", "-q", "-c", branch)
    (checkout / "flows" / SLOW_FLOW_FILE).write_text(SLOW_FLOW_SOURCE, "utf-8")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "a slow flow")
    code, out, err = run_command_line(
        checkout,
        "deploy",
        capsys=capsys,
        flow_file=SLOW_FLOW_FILE,
        function="slow_flow",
    )
    assert (code, err) == (0, ""), out + err
    return out.splitlines()[0].split(" as ")[0].removeprefix("Deployed ")


async def run_all_and_wait(deployment_name: str, runs: int) -> list:
    """Create `runs` flow runs at once; wait (bounded) until every one is final."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name)
        created = [
            await client.create_flow_run_from_deployment(
                deployment.id, parameters={"run_number": number}
            )
            for number in range(runs)
        ]
        deadline = time.monotonic() + ALL_DONE_TIMEOUT_SECONDS
        while True:
            flow_runs = [await client.read_flow_run(run.id) for run in created]
            if all(run.state and run.state.is_final() for run in flow_runs):
                return flow_runs
            if time.monotonic() > deadline:
                return flow_runs
            await asyncio.sleep(1)


def worker_by_process(flow_runs, logs: dict[str, Path]) -> dict[str, str]:
    """Each run's worker: the API's infrastructure pid of the run (`host:pid`), found
    in the one worker's log that started and saw that process end."""
    exited = {
        name: set(PROCESS_EXITED.findall(path.read_text("utf-8")))
        for name, path in logs.items()
    }
    owners = {}
    for flow_run in flow_runs:
        pid = flow_run.infrastructure_pid.rsplit(":", 1)[1]
        owners[str(flow_run.id)] = [name for name in logs if pid in exited[name]]
    assert all(len(found) == 1 for found in owners.values()), owners
    return {run: found[0] for run, found in owners.items()}


def worker_by_log(logs: dict[str, Path]) -> dict[str, str]:
    """Each run's worker, as the workers' own logs say they took it."""
    return {
        run: name
        for name, path in logs.items()
        for run in RUN_SUBMITTED.findall(path.read_text("utf-8"))
    }


def assert_files_whole(folder: Path, runs: int) -> None:
    """run_00.csv ... each with every row of its run, and nothing else (no part file)."""
    expected = [f"run_{number:02d}.csv" for number in range(runs)]
    assert sorted(path.name for path in folder.iterdir()) == expected
    for number, name in enumerate(expected):
        frame = pd.read_csv(folder / name)
        assert list(frame.columns) == ["run", "row"]
        assert (frame["run"] == number).all() and len(frame) == SLOW_FLOW_ROWS
        assert frame["row"].tolist() == list(range(SLOW_FLOW_ROWS))


def run_on_two_workers(deployment_name: str, url: str, folder: Path):
    """Start the two workers (limit 1 each, each in a folder of its own below
    `folder`), run the deployment RUNS times at once, stop them; (runs, logs)."""
    logs = {name: folder / name / "worker.log" for name in WORKERS}
    with ExitStack() as workers:
        for name, log_path in logs.items():
            workers.enter_context(
                local_prefect.running_worker(
                    os.environ["FLOWS_WORK_POOL"], url, log_path, name=name, limit=1
                )
            )
        with temporary_settings(updates={PREFECT_API_URL: url}):
            return asyncio.run(run_all_and_wait(deployment_name, RUNS)), logs


# The bucket is the storage root: no worker sees the checkout.
@pytest.mark.usefixtures("s3_bucket")
def test_two_workers_share_the_runs_of_one_pool(
    checkout, prefect_api_url, tmp_path, monkeypatch, capsys
):
    """8 runs of 11 s on two workers (limit 1 each): both run some, all complete, and
    every file is whole."""
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "process")
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "output"))
    started = time.monotonic()
    deployment_name = deploy_slow_flow(checkout, "scale", capsys)
    flow_runs, logs = run_on_two_workers(deployment_name, prefect_api_url, tmp_path)
    wall_seconds = time.monotonic() - started

    worker_logs = "\n".join(path.read_text("utf-8")[-3000:] for path in logs.values())
    states = [run.state.name if run.state else None for run in flow_runs]
    assert states == ["Completed"] * RUNS, worker_logs
    by_process = worker_by_process(flow_runs, logs)
    assert worker_by_log(logs) == by_process
    counts = Counter(by_process.values())
    print(f"\nruns per worker: {dict(counts)}; wall time {wall_seconds:.1f} s")
    assert set(counts) == set(WORKERS) and sum(counts.values()) == RUNS, counts
    for name in WORKERS:  # neither worker's folder holds the code: it came from S3
        assert not (tmp_path / name / "flows").exists()
    assert_files_whole(tmp_path / "output" / "dev", RUNS)
