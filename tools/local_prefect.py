"""A local Prefect server and worker: the embedded default of `make demo` and the tests.

    python3 tools/local_prefect.py start [--home DIR] [--port N]   # reuse or start
    python3 tools/local_prefect.py stop  [--home DIR]
    python3 tools/local_prefect.py run-deployment NAME --pool POOL [--param N=V]
                                                     # one run, waited on

The server listens on 127.0.0.1 only and keeps its SQLite database in --home.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


REPOSITORY_DIR = Path(__file__).resolve().parent.parent
DEFAULT_HOME = REPOSITORY_DIR / ".local" / "prefect"
DEFAULT_PORT = 4200
SERVER_START_TIMEOUT_SECONDS = 120
RUN_TIMEOUT_SECONDS = 300
PREFECT_EXECUTABLE = str(Path(sys.executable).parent / "prefect")
# The venv on Prefect 3 (`make venv PREFECT=3`), beside this one.
PREFECT3_VENV = REPOSITORY_DIR / ".venv-prefect3"


def api_url(port: int) -> str:
    """The API address of a local server on `port`."""
    return f"http://127.0.0.1:{port}/api"


def ui_url(port: int) -> str:
    """The UI address of a local server on `port`."""
    return f"http://127.0.0.1:{port}"


def is_healthy(url: str) -> bool:
    """Whether a Prefect API answers its health check at `url`."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def quiet_environment(**overrides: str) -> dict[str, str]:
    """The environment for Prefect processes here: no analytics (no internet)."""
    return {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
        **overrides,
    }


# Events on, and the triggers service that runs automations: failure notifications
# then go through automations, as on Prefect Cloud.
EVENTS_ON = {
    "PREFECT_EXPERIMENTAL_EVENTS": "true",
    "PREFECT_API_SERVICES_TRIGGERS_ENABLED": "true",
}


def start_server(
    home: Path, port: int, events: bool = True, executable: str = PREFECT_EXECUTABLE
) -> tuple[subprocess.Popen | None, str]:
    """Start a server keeping its state in `home`, or reuse one healthy on `port`.

    With `events`, the server runs automations, as Prefect Cloud does; without, it
    is a 2.20 server as installed, with notification policies only. Returns the
    process it started (None when reused) and the API address. `executable` is the
    `prefect` of the major to serve (Prefect 3 always runs automations).
    """
    url = api_url(port)
    if is_healthy(url):
        return None, url
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.log", "ab") as log:
        process = subprocess.Popen(  # pylint: disable=consider-using-with
            [executable, "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            # The server builds the links of its notifications from PREFECT_UI_URL;
            # unset, they read http://ephemeral-prefect/...
            env=quiet_environment(
                PREFECT_HOME=str(home),
                PREFECT_UI_URL=ui_url(port),
                **(EVENTS_ON if events else {}),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `make demo`, until `make stop`
        )
    (home / "server.pid").write_text(str(process.pid), encoding="utf-8")
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while not is_healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(
                f"the Prefect server did not become healthy at {url}; "
                f"see {home / 'server.log'}"
            )
        time.sleep(0.5)
    return process, url


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Interrupt a Prefect process (twice, as it asks), then end its whole group."""
    signals = ((signal.SIGINT, os.kill), (signal.SIGINT, os.kill))
    signals += ((signal.SIGTERM, os.killpg), (signal.SIGKILL, os.killpg))
    for sig, send in signals:
        if process.poll() is not None:
            return
        try:
            send(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout / 4)
        except subprocess.TimeoutExpired:
            continue


def stop_server(home: Path) -> bool:
    """Stop the server started with this `home`; False when none was running."""
    pid_file = home / "server.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text(encoding="utf-8"))
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True


def worker_command(
    pool: str, name: str | None, limit: int | None, worker_type: str | None = None
) -> list[str]:
    """`prefect worker start` for `pool`, named, limited and of a type when asked
    (else the pool's type)."""
    command = [PREFECT_EXECUTABLE, "worker", "start", "--pool", pool]
    if name is not None:
        command += ["--name", name]
    if limit is not None:
        command += ["--limit", str(limit)]
    if worker_type is not None:
        command += ["--type", worker_type]
    return command


@contextmanager
def running_worker(  # pylint: disable=too-many-arguments
    pool: str, url: str, log_path: Path, *, name=None, limit=None, worker_type=None
) -> Iterator[subprocess.Popen]:
    """A worker of `pool` polling every second, stopped when the block ends.

    It starts in the log's folder, not in a checkout: what it runs comes from the
    deployment's pull step alone. `name` shows in its runs' logs; `limit` caps the
    runs it executes at once.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(  # pylint: disable=consider-using-with
            worker_command(pool, name, limit, worker_type),
            env=quiet_environment(
                PREFECT_API_URL=url,
                PREFECT_WORKER_QUERY_SECONDS="1",
                PREFECT_LOGGING_LEVEL="INFO",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=log_path.parent,
        )
    try:
        yield worker
    finally:
        stop_process(worker)


async def _run_and_wait(deployment_names, timeout: float, parameters: dict) -> list:
    # pylint: disable-next=import-outside-toplevel
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        flow_runs = []
        for name in deployment_names:
            deployment = await client.read_deployment_by_name(name)
            flow_runs.append(
                await client.create_flow_run_from_deployment(
                    deployment.id, parameters=parameters
                )
            )
        return await wait_for_final_states(client, flow_runs, timeout)


async def wait_for_final_states(client, flow_runs, timeout: float) -> list:
    """`flow_runs` read again every second until each is in a final state (Completed,
    Failed, Crashed, ...) or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        flow_runs = [await client.read_flow_run(run.id) for run in flow_runs]
        if all(run.state is not None and run.state.is_final() for run in flow_runs):
            return flow_runs
        if time.monotonic() > deadline:
            return flow_runs
        await asyncio.sleep(1)


@contextmanager
def serving(home: Path, port: int) -> Iterator[str]:
    """A server of its own in `home` on `port` for a benchmark: its API URL, which this
    process and its children use (PREFECT_API_URL) until the block ends; then it stops.
    """
    # pylint: disable=import-outside-toplevel
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Events off: a benchmark measures the toolkit, not the server's event services.
    process, url = start_server(home, port, events=False)
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        if process is not None:
            stop_process(process)


def run_deployments_once(  # pylint: disable=too-many-arguments
    deployment_names, pool: str, url: str, log_path: Path, parameters=None
) -> list:
    """Start one worker, run each deployment once, wait for final states, stop it."""
    # pylint: disable=import-outside-toplevel
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        with running_worker(pool, url, log_path):
            return asyncio.run(
                _run_and_wait(deployment_names, RUN_TIMEOUT_SECONDS, parameters or {})
            )


def run_deployment_once(  # pylint: disable=too-many-arguments
    deployment_name: str, pool: str, url: str, log_path: Path, parameters=None
):
    """Start a worker, run the deployment once, wait for a final state, stop it."""
    (flow_run,) = run_deployments_once(
        [deployment_name], pool, url, log_path, parameters
    )
    return flow_run


def main(arguments: list[str]) -> int:
    """The command line above."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=["start", "stop", "run-deployment"])
    parser.add_argument("deployment", nargs="?", help="flow/deployment name")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--pool", help="work pool the worker serves")
    parser.add_argument(
        "--param", action="append", default=[], help="NAME=VALUE for this run"
    )
    options = parser.parse_intermixed_args(arguments)
    url = api_url(options.port)
    if options.command == "start":
        process, url = start_server(options.home, options.port)
        verb = "started" if process else "already running"
        print(f"Prefect server {verb}: {url} (UI {ui_url(options.port)})")
    elif options.command == "stop":
        stopped = stop_server(options.home)
        print("Prefect server stopped" if stopped else "no Prefect server was running")
    else:
        if not options.deployment or not options.pool:
            parser.error("run-deployment needs a deployment name and --pool")
        log_path = options.home / "worker.log"
        parameters = dict(item.split("=", 1) for item in options.param)
        flow_run = run_deployment_once(
            options.deployment, options.pool, url, log_path, parameters
        )
        state = flow_run.state.name if flow_run.state else "unknown"
        print(f"Flow run {flow_run.name}: {state}")
        print(f"  {ui_url(options.port)}/flow-runs/flow-run/{flow_run.id}")
        print(f"  worker log: {log_path}")
        return 0 if state == "Completed" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
