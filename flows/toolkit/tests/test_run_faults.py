"""Faults of a nightly run beyond the database, against real servers and a real worker.

- The partner's SFTP server refuses the rename that makes an upload visible.
- The local folder's disk is full.
- The flow-run process is killed (SIGKILL) mid-delivery.

The first two fail the run once, clean: a refusal or a full disk is not something a
retry a few seconds later mends. The third is Crashed by the worker, and the next run
of the deployment delivers whole files.
"""

import asyncio
import contextlib
import functools
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import fresh_database, serve, service_unavailable, sftp_connection_to
from deploy_helpers import run_command_line
from fixture_data import CUSTOMERS, load_fixture_data
from prefect import get_client
from prefect.blocks.system import Secret
from sqlalchemy import text
from test_faults import SLOW_RETRIES, connection_to, deliver_with, run_in_a_flow

import local_prefect
import services
from toolkit import delivery
from toolkit.database import DatabaseConnection

# What a locked-down partner's server refuses: both ways of renaming a file.
REFUSED_SFTP_REQUESTS = ("rename", "posix-rename")
ORDERS = pd.DataFrame(
    {
        "order_id": range(1, 2001),
        "customer": ["acme", "globex"] * 1000,
        "amount_cents": [(number * 7919) % 100_000 for number in range(2000)],
    }
)
# A disk that holds the first few MB of the fault tests' 20 MB extract, not all.
TINY_DISK_BYTES = 4 * 1024 * 1024
# The fixture flow's file of the day gets this many more orders (about 14 MB), so
# that a kill lands while it uploads, however fast the machine.
NIGHTLY_ORDERS = 400_000
NIGHTLY_DAY = "2024-08-01"  # the fixture flow's default day
NIGHTLY_DATABASE = "nightly_shop"
DAY_FILE = f"orders_{NIGHTLY_DAY}.csv"
DELIVERED = ["customer_totals.csv", DAY_FILE]


def final_names_and_parts(folder: Path) -> tuple[list[str], list[str]]:
    """The names in `folder` a partner sees, and the temporary upload names."""
    names = sorted(os.listdir(folder)) if folder.exists() else []
    return (
        [name for name in names if ".part-" not in name],
        [name for name in names if ".part-" in name],
    )


@pytest.fixture(scope="module")
def renameless_sshd():
    """An sshd of this module's own whose SFTP server refuses every rename."""
    yield from serve(
        functools.partial(services.running_sshd, sftp_refuses=REFUSED_SFTP_REQUESTS)
    )


@pytest.mark.faults
@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("yesterdays_file", [False, True], ids=["new", "replacing"])
def test_refused_rename_fails_once_and_leaves_the_folder_as_it_was(
    fault, renameless_sshd, yesterdays_file, tmp_path
):
    """The partner's server refuses renames: the run fails at once, one line names the
    file and the refusal, the temporary file is removed, and the final name holds what
    it held before (nothing, or yesterday's file untouched)."""
    fault.expect("failed clean")
    partner = tmp_path / "partner"
    partner.mkdir()
    if yesterdays_file:
        (partner / "orders.csv").write_bytes(b"yesterday's orders\n")
    sink = delivery.SftpSink(sftp_connection_to(renameless_sshd, str(partner)))

    flow_state, task_state, run_count = run_in_a_flow(
        delivery.deliver_frame.with_options(**SLOW_RETRIES),
        sink,
        ORDERS,
        "orders.csv",
    )

    assert flow_state.is_failed()
    assert run_count == 1  # a retry would run it again after 30 s
    message = str(task_state.result(raise_on_failure=False))
    assert "\n" not in message
    assert "refused to rename" in message and "Permission denied" in message
    assert f"to {partner / 'orders.csv'}" in message
    assert message in task_state.message  # the line the task run's page shows
    assert final_names_and_parts(partner)[1] == []
    if yesterdays_file:
        assert os.listdir(partner) == ["orders.csv"]
        assert (partner / "orders.csv").read_bytes() == b"yesterday's orders\n"
    else:
        assert os.listdir(partner) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A folder on a tmpfs of TINY_DISK_BYTES, mounted for this test alone."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    # As a CI runner's user, through its password-free sudo, as .ci/run installs.
    as_root = [] if os.geteuid() == 0 else ["sudo", "-n"]
    options = f"size={TINY_DISK_BYTES},mode=1777"
    mounted = subprocess.run(
        [*as_root, "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        service_unavailable(f"no tmpfs for a full disk: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run([*as_root, "umount", str(mount_point)], check=True)


@pytest.mark.faults
@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("path", ["frame", "chunks", "as_is"])
def test_full_disk_fails_once_and_leaves_nothing(fault, path, postgres, tiny_disk):
    """A local folder's disk fills up mid-file, in each delivery path: the run fails
    once (a full disk stays full for a retry's seconds), with one line naming the file
    and ENOSPC, and the folder holds nothing, not even the temporary file."""
    fault.expect("failed clean")
    folder = tiny_disk / "out"
    sink = delivery.LocalFolderSink(str(folder))

    flow_state, task_state, run_count = deliver_with(
        path, connection_to(postgres), sink, "extract.csv"
    )

    assert flow_state.is_failed()
    assert run_count == 1  # QUICK_RETRIES would have run it again after 1 s
    message = str(task_state.result(raise_on_failure=False))
    assert "\n" not in message
    assert "No space left on device" in message
    assert str(folder / "extract.csv") in message
    assert message in task_state.message  # the line the task run's page shows
    assert os.listdir(folder) == []


def test_next_delivery_removes_what_a_killed_run_left_in_a_local_folder(tmp_path):
    """A killed run leaves its temporary file (nothing cleans up after SIGKILL): the
    next delivery of that file removes it, as it does on SFTP; other files' stay."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".orders.csv.part-0badc0de").write_bytes(b"order_id,cust")
    (folder / ".totals.csv.part-0badc0de").write_bytes(b"customer,to")

    delivery.deliver_frame.fn(
        delivery.LocalFolderSink(str(folder)), ORDERS, "orders.csv"
    )

    assert sorted(os.listdir(folder)) == [".totals.csv.part-0badc0de", "orders.csv"]


@pytest.fixture
def nightly_shop(postgres, sshd, prefect_api_url):
    """The fixture flow's main database block, on the session's PostgreSQL: the sample
    shop with NIGHTLY_ORDERS more orders on the day. Returns the function that points
    its main SFTP block at a folder of the session's sshd."""
    del prefect_api_url  # the blocks are saved on the session's server
    shop = fresh_database(postgres, NIGHTLY_DATABASE)
    load_fixture_data(shop)
    with shop.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO orders"
                " SELECT 1000 + g, (CAST(:customers AS text[]))[g % 5 + 1], :day,"
                " CAST(g AS bigint) * 7919 % 100000"
                " FROM generate_series(1, :rows) AS g"
            ),
            {"customers": list(CUSTOMERS), "day": NIGHTLY_DAY, "rows": NIGHTLY_ORDERS},
        )
    shop.dispose()
    DatabaseConnection(
        url=postgres.url(password=False, database=NIGHTLY_DATABASE),
        password=Secret(value=postgres.password),
    ).save("fixture-database-main", overwrite=True)

    def deliver_to(folder: Path) -> Path:
        sftp_connection_to(sshd, str(folder)).save("fixture-sftp-main", overwrite=True)
        return folder

    return deliver_to


@pytest.fixture
def nightly_deployment(checkout, prefect_api_url, monkeypatch, capsys) -> str:
    """The fixture flow deployed from main (env=main) to a process pool;
    its name."""
    del prefect_api_url  # deployed to the session's server
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "process")
    code, out, err = run_command_line(checkout, "deploy", capsys=capsys)
    assert (code, err) == (0, ""), out + err
    return out.splitlines()[0].removeprefix("Deployed ").split(" as ")[0]


async def start_flow_run(deployment_name: str):
    """A new flow run of the deployment, with its own parameters."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name)
        return await client.create_flow_run_from_deployment(deployment.id)


async def read_when_final(flow_run):
    """The flow run once it is in a final state (bounded in time)."""
    async with get_client() as client:
        (final,) = await local_prefect.wait_for_final_states(
            client, [flow_run], local_prefect.RUN_TIMEOUT_SECONDS
        )
        return final


def run_to_the_end(deployment_name: str):
    """Run the deployment once on the running worker; the flow run once final."""
    return asyncio.run(read_when_final(asyncio.run(start_flow_run(deployment_name))))


def process_of(flow_run) -> int:
    """The pid of the run's process, once the worker has recorded it (`host:pid`)."""
    deadline = time.monotonic() + local_prefect.RUN_TIMEOUT_SECONDS

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run.id)

    while not flow_run.infrastructure_pid and time.monotonic() < deadline:
        time.sleep(0.2)
        flow_run = asyncio.run(read())
    assert flow_run.infrastructure_pid, "the worker recorded no process in time"
    host, pid = flow_run.infrastructure_pid.rsplit(":", 1)
    assert host == socket.gethostname()
    return int(pid)


def parent_of(pid: int) -> int:
    """The parent's pid of a running process (Linux's /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    return int(stat.rsplit(")", 1)[1].split()[1])


def part_bytes(folder: Path, file_name: str) -> int:
    """Bytes in the temporary upload files of `file_name` in `folder`, now."""
    total = 0
    for part in folder.glob(f".{file_name}.part-*"):
        with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
            total += part.stat().st_size
    return total


def kill_once_bytes_arrive(pid: int, folder: Path, file_name: str) -> int:
    """SIGKILL `pid` once the upload of `file_name` has bytes on the server; how many
    bytes it had then."""
    deadline = time.monotonic() + local_prefect.RUN_TIMEOUT_SECONDS
    while not (arrived := part_bytes(folder, file_name)):
        assert not (folder / file_name).exists(), "delivered before it was killed"
        assert time.monotonic() < deadline, f"no byte of {file_name} came in time"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    return arrived


@dataclass(frozen=True)
class LeftByKill:
    """What the partner's folder held once the killed run was final."""

    bytes_at_kill: int
    whole_files: dict[str, bytes]
    parts: list[str]
    part_bytes: int


def run_killed_mid_upload(deployment_name: str, worker, folder: Path):
    """A run of the deployment whose process is killed once the day's file has bytes
    in `folder`; the run once final, and what it left."""
    flow_run = asyncio.run(start_flow_run(deployment_name))
    pid = process_of(flow_run)
    assert parent_of(pid) == worker.pid  # the worker's child runs the flow
    bytes_at_kill = kill_once_bytes_arrive(pid, folder, DAY_FILE)
    flow_run = asyncio.run(read_when_final(flow_run))
    finals, parts = final_names_and_parts(folder)
    left = LeftByKill(
        bytes_at_kill,
        {name: (folder / name).read_bytes() for name in finals},
        parts,
        part_bytes(folder, DAY_FILE),
    )
    print(f"\nkilled: {left.bytes_at_kill} bytes of {DAY_FILE} at the kill;", end="")
    print(f" left {parts} ({left.part_bytes} bytes) and {finals}")
    return flow_run, left


def seconds_from_creation_to_end(first_run, last_run) -> float:
    """Wall seconds from the first run's creation to the last run's end, as the API
    recorded them: worker pickup and process start included."""
    return (last_run.end_time - first_run.created).total_seconds()


def tail(log_path: Path) -> str:
    """The end of a log, for an assertion's message."""
    return log_path.read_text("utf-8")[-3000:]


@pytest.mark.faults
def test_killed_run_is_crashed_and_the_next_run_delivers_whole_files(
    fault, nightly_deployment, nightly_shop, prefect_api_url, tmp_path
):
    """The fixture flow's nightly run, on a process worker: its process is killed
    (SIGKILL) while the day's file uploads. The worker marks the run Crashed, nothing
    is at that file's final name, and the next run of the deployment delivers both
    files whole, byte for byte a faultless run's, and clears the killed upload's part.
    """
    fault.expect("recovered")
    log_path = tmp_path / "worker" / "worker.log"
    fault.watch(log_path)
    with local_prefect.running_worker(
        os.environ["FLOWS_WORK_POOL"], prefect_api_url, log_path
    ) as worker:
        calm = nightly_shop(tmp_path / "calm")
        calm_run = run_to_the_end(nightly_deployment)
        partner = nightly_shop(tmp_path / "partner")
        killed, left = run_killed_mid_upload(nightly_deployment, worker, partner)
        rerun = run_to_the_end(nightly_deployment)

    assert calm_run.state.is_completed(), tail(log_path)
    assert killed.state.is_crashed(), tail(log_path)
    assert "non-zero status code -9" in killed.state.message
    assert DAY_FILE not in left.whole_files and len(left.parts) == 1
    for name, content in left.whole_files.items():  # done before the kill
        assert content == (calm / name).read_bytes()
    assert rerun.state.is_completed(), tail(log_path)
    assert sorted(os.listdir(calm)) == DELIVERED
    assert sorted(os.listdir(partner)) == DELIVERED  # the killed run's part is gone
    for name in DELIVERED:
        assert (partner / name).read_bytes() == (calm / name).read_bytes()
    fault.cost(
        seconds_from_creation_to_end(killed, rerun)
        - seconds_from_creation_to_end(calm_run, calm_run)
    )
