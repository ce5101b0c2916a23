"""Faults of an inbound run, each in a real flow run of the inbound fixture flow,
deployed from a checkout to a process worker, loading from a real sshd into a real
PostgreSQL of this module's own:

- PostgreSQL restarted mid-COPY; the SFTP server killed mid-download: the task's retry
  loads the file whole, once;
- the flow-run process killed mid-COPY: Crashed, nothing of the file committed, and the
  next run loads it; killed after the commit and before the move: the next run only
  moves it;
- a file still growing when the run lists the folder: left, and loaded by the next run;
- a malformed line: that file fails the run and moves to failed/, the others load;
- the same file delivered twice, and a changed file under the same name: the first is
  only archived, the second loads.

After each: every row of every good file is in the table exactly once, the ledger
agrees with the table, and the drop folder, processed/<day>/ and failed/ hold what the
settings say.
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    files_under,
    fresh_database,
    git,
    serve,
    sftp_connection_to,
    utc_days_of_this_test,
)
from deploy_helpers import run_command_line
from fixture_checkout import INBOUND_FIXTURE_FLOW, add_inbound_flow
from prefect import get_client
from prefect.blocks.system import Secret
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from test_notifications import (
    NOTIFY_WAIT_SECONDS,
    delete_notifications,
    serving_receiver,
    setup_notify,
)
from test_run_faults import process_of, read_when_final, tail

import local_prefect
import services
from toolkit.database import DatabaseConnection
from toolkit.pickup import SftpDropFolder

pytestmark = pytest.mark.inbound

DATABASE = "inbound_faults"
TABLE = "partner_orders"
# Rows of the large file (about 30 MB): its COPY lasts long enough to be hit.
LARGE_ROWS = 800_000
HIT_AFTER_BYTES = 3 * 1024 * 1024
QUICK = {"settle_seconds": 0.5}
CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli")


@pytest.fixture(scope="module")
def inbound_postgres():
    """A PostgreSQL of this module's own, which its tests restart and reconfigure."""
    yield from serve(services.running_postgres)


def orders_text(first_id: int, count: int) -> str:
    """A partner's order file: ids first_id.. first_id + count - 1."""
    lines = ["order_id,customer,placed_on,amount\n"]
    lines += [
        f'{i},"{CUSTOMERS[i % 5]}",2024-08-{1 + i % 28:02d},{i % 1000}.{i % 100:02d}\n'
        for i in range(first_id, first_id + count)
    ]
    return "".join(lines)


@dataclass
class Inbound:
    """The deployed inbound flow, its drop folder, its database, its worker."""

    deployment: str
    drop: Path
    server: services.Postgres
    sshd: services.Sshd
    log: Path
    worker: subprocess.Popen

    def drop_file(self, name: str, first_id: int, count: int) -> None:
        """The partner drops a whole file (written aside, then renamed)."""
        partial = self.drop / f".{name}.part"
        partial.write_text(orders_text(first_id, count))
        os.replace(partial, self.drop / name)

    def start(self, **parameters):
        """A new flow run of the deployment."""

        async def create():
            async with get_client() as client:
                deployment = await client.read_deployment_by_name(self.deployment)
                return await client.create_flow_run_from_deployment(
                    deployment.id, parameters={**QUICK, **parameters}
                )

        return asyncio.run(create())

    def run(self, **parameters):
        """One run to its end; the flow run, final."""
        return asyncio.run(read_when_final(self.start(**parameters)))

    def sql(self, statement: str):
        """The rows of `statement` on the target database (a connection of its own)."""
        engine = create_engine(self.server.url(database=DATABASE), poolclass=NullPool)
        try:
            with engine.connect() as connection:
                return connection.execute(text(statement)).all()
        finally:
            engine.dispose()

    def admin(self, statement: str):
        """Run `statement` as the superuser, outside a transaction; its rows."""
        engine = create_engine(
            self.server.url(), poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        try:
            with engine.connect() as connection:
                result = connection.execute(text(statement))
                return result.all() if result.returns_rows else []
        finally:
            engine.dispose()

    def files(self) -> list[str]:
        """Every file below the drop folder, relative; hidden partials left out."""
        return [
            relative
            for relative in files_under(self.drop)
            if not os.path.basename(relative).startswith(".")
        ]


@pytest.fixture
def inbound(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    checkout, inbound_postgres, own_sshd, prefect_api_url, monkeypatch, capsys, tmp_path
):
    """The inbound fixture flow deployed from main to a process pool, its blocks on
    this module's PostgreSQL (a fresh database) and a drop folder of the test's sshd,
    and a worker running."""
    add_inbound_flow(checkout / "flows")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "the inbound flow")
    git(checkout, "push", "-q", "origin", "main")
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "process")
    file_name, function = INBOUND_FIXTURE_FLOW
    code, out, err = run_command_line(
        checkout, "deploy", capsys=capsys, flow_file=file_name, function=function
    )
    assert (code, err) == (0, ""), out + err
    fresh_database(inbound_postgres, DATABASE).dispose()
    DatabaseConnection(
        url=inbound_postgres.url(password=False, database=DATABASE),
        password=Secret(value=inbound_postgres.password),
    ).save("fixture-database-main", overwrite=True)
    drop = tmp_path / "drop"
    drop.mkdir()
    sftp_connection_to(own_sshd, str(drop)).save("fixture-sftp-main", overwrite=True)
    log = tmp_path / "worker" / "worker.log"
    with local_prefect.running_worker(
        os.environ["FLOWS_WORK_POOL"], prefect_api_url, log
    ) as worker:
        yield Inbound(
            out.splitlines()[0].removeprefix("Deployed ").split(" as ")[0],
            drop,
            inbound_postgres,
            own_sshd,
            log,
            worker,
        )


def check_exactly_once(inbound: Inbound, good: dict[str, range]) -> None:
    """Every row of every good file once in the table; the ledger agrees with it."""
    expected = sorted(i for ids in good.values() for i in ids)
    found = [row[0] for row in inbound.sql(f"SELECT order_id FROM {TABLE} ORDER BY 1")]
    assert found == expected
    ledger = inbound.sql(
        "SELECT path, rows, target_table, mode, flow_run_id IS NOT NULL"
        " FROM flows_inbound_ledger ORDER BY id"
    )
    assert sorted(ledger) == sorted(
        (name.split("#")[0], len(ids), TABLE, "append", True)
        for name, ids in good.items()
    )
    assert sum(row[1] for row in ledger) == len(found)
    print_ledger(inbound)


def print_ledger(inbound: Inbound) -> None:
    """The ledger as a person would look it up (shown with pytest -s)."""
    print(
        "\nsource | path | size | sha256 | rows | target_table | mode | flow run | loaded_at"
    )
    for row in inbound.sql(
        "SELECT source, path, size, left(sha256, 12), rows, target_table, mode,"
        " left(flow_run_id, 8), loaded_at FROM flows_inbound_ledger ORDER BY id"
    ):
        print(" | ".join(str(value) for value in row))


def processed(*names: str) -> list[str]:
    """The paths of `names` in the run day's processed/ folder."""
    return [f"processed/<day>/{name}" for name in names]


def next_run_completes(inbound: Inbound, fault) -> None:
    """The run after the fault: Completed, its time the fault's cost."""
    started = time.monotonic()
    rerun = inbound.run()
    fault.cost(time.monotonic() - started)
    assert rerun.state.is_completed(), tail(inbound.log)


def claimed_by(flow_run, name: str) -> str:
    """The path of `name` in the claim folder of `flow_run`."""
    return f"claimed/{flow_run.id}/{name}"


def wait_for(condition, what: str, timeout: float = local_prefect.RUN_TIMEOUT_SECONDS):
    """Poll `condition()` every 10 ms until it returns something true; that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the server may be restarting
            if found := condition():
                return found
        time.sleep(0.01)
    raise AssertionError(f"no {what} in {timeout} s")


def copy_under_way(inbound: Inbound) -> bool:
    """Whether a COPY into the target has moved HIT_AFTER_BYTES."""
    rows = inbound.admin("SELECT bytes_processed FROM pg_stat_progress_copy")
    return any(row[0] >= HIT_AFTER_BYTES for row in rows)


@pytest.mark.faults
def test_postgres_restarted_mid_copy_the_retry_loads_the_file_once(fault, inbound):
    """PostgreSQL restarts while the large file streams into COPY: the try rolls
    back, the task's retry loads the file whole, and the run completes."""
    fault.expect("recovered")
    fault.watch(inbound.log)
    inbound.drop_file("orders_1.csv", 1, 100)
    inbound.drop_file("orders_2.csv", 1001, LARGE_ROWS)
    flow_run = inbound.start()
    wait_for(lambda: copy_under_way(inbound), "COPY under way")
    inbound.server.restart()
    final = asyncio.run(read_when_final(flow_run))
    assert final.state.is_completed(), tail(inbound.log)
    check_exactly_once(
        inbound,
        {"orders_1.csv": range(1, 101), "orders_2.csv": range(1001, 1001 + LARGE_ROWS)},
    )
    assert inbound.files() == processed("orders_1.csv", "orders_2.csv")


@pytest.mark.faults
def test_sftp_server_killed_mid_download_the_retry_loads_the_file_once(fault, inbound):
    """The SFTP server dies while the large file downloads into COPY: nothing of it
    is committed, the retry (a new session, once sshd is back) loads it whole."""
    fault.expect("recovered")
    fault.watch(inbound.log)
    inbound.drop_file("orders_1.csv", 1, LARGE_ROWS)
    flow_run = inbound.start()
    wait_for(lambda: copy_under_way(inbound), "COPY under way")
    inbound.sshd.stop()
    restarted = services.start_sshd(inbound.sshd.folder)
    try:
        final = asyncio.run(read_when_final(flow_run))
    finally:
        restarted.stop()
    assert final.state.is_completed(), tail(inbound.log)
    check_exactly_once(inbound, {"orders_1.csv": range(1, 1 + LARGE_ROWS)})
    assert inbound.files() == processed("orders_1.csv")


@pytest.mark.faults
def test_run_killed_mid_copy_commits_nothing_and_the_next_run_loads(fault, inbound):
    """The flow-run process is killed (SIGKILL) mid-COPY: Crashed, none of that
    file's rows in the table, no ledger row, the file still in the drop folder; the
    next run loads it."""
    fault.expect("recovered")
    fault.watch(inbound.log)
    inbound.drop_file("orders_1.csv", 1, 100)
    inbound.drop_file("orders_2.csv", 1001, LARGE_ROWS)
    flow_run = inbound.start()
    pid = process_of(flow_run)
    wait_for(lambda: copy_under_way(inbound), "COPY under way")
    os.kill(pid, signal.SIGKILL)
    killed = asyncio.run(read_when_final(flow_run))
    assert killed.state.is_crashed(), tail(inbound.log)
    check_exactly_once(inbound, {"orders_1.csv": range(1, 101)})
    assert inbound.files() == [
        claimed_by(flow_run, "orders_2.csv"),
        *processed("orders_1.csv"),
    ]
    next_run_completes(inbound, fault)
    check_exactly_once(
        inbound,
        {"orders_1.csv": range(1, 101), "orders_2.csv": range(1001, 1001 + LARGE_ROWS)},
    )
    assert inbound.files() == processed("orders_1.csv", "orders_2.csv")


@contextlib.contextmanager
def commits_that_wait(inbound: Inbound):
    """Every commit waits for a standby that never comes: committed in the server's
    log, not yet answered (PostgreSQL's synchronous replication). Undone at the end,
    which lets the waiting commits finish."""
    inbound.admin("ALTER SYSTEM SET synchronous_standby_names = 'never_there'")
    inbound.admin("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        inbound.admin("ALTER SYSTEM RESET synchronous_standby_names")
        inbound.admin("SELECT pg_reload_conf()")


def commit_waiting(inbound: Inbound) -> bool:
    """Whether a session of the target database waits for its commit's answer."""
    rows = inbound.admin(
        "SELECT count(*) FROM pg_stat_activity"
        f" WHERE datname = '{DATABASE}' AND wait_event = 'SyncRep'"
    )
    return rows[0][0] > 0


@pytest.mark.faults
def test_run_killed_after_the_commit_the_next_run_only_moves_the_file(fault, inbound):
    """The flow-run process dies once its load is committed and before the file
    moves: the file stays in the drop folder, its rows and ledger row are in the
    database; the next run loads nothing again and moves the file."""
    fault.expect("recovered")
    fault.watch(inbound.log)
    inbound.drop_file("orders_1.csv", 1, 100)
    assert inbound.run().state.is_completed(), tail(inbound.log)  # tables made
    inbound.drop_file("orders_2.csv", 1001, 5000)
    with commits_that_wait(inbound):
        flow_run = inbound.start()
        pid = process_of(flow_run)
        wait_for(lambda: commit_waiting(inbound), "commit waiting")
        os.kill(pid, signal.SIGKILL)
        killed = asyncio.run(read_when_final(flow_run))
    assert killed.state.is_crashed(), tail(inbound.log)
    good = {"orders_1.csv": range(1, 101), "orders_2.csv": range(1001, 6001)}
    wait_for(lambda: len(inbound.sql("SELECT 1 FROM flows_inbound_ledger")) == 2,
             "the waiting commit")  # fmt: skip
    check_exactly_once(inbound, good)
    assert inbound.files() == [
        claimed_by(flow_run, "orders_2.csv"),
        *processed("orders_1.csv"),
    ]
    next_run_completes(inbound, fault)
    check_exactly_once(inbound, good)
    assert inbound.files() == processed("orders_1.csv", "orders_2.csv")
    assert "already loaded (this file is in the ledger)" in tail(inbound.log)


@pytest.mark.faults
def test_growing_file_is_left_and_the_next_run_loads_it(fault, inbound):
    """The partner is still writing a file when the run lists the folder: the run
    loads the complete one, leaves the growing one with a line saying so, and the
    next run, once it is complete, loads it."""
    fault.expect("recovered")
    fault.watch(inbound.log)
    inbound.drop_file("orders_1.csv", 1, 100)
    growing = inbound.drop / "orders_2.csv"
    growing.write_text(orders_text(1001, 10))
    done = threading.Event()

    def partner_writes():
        next_id = 1011
        while not done.is_set():
            with growing.open("a") as handle:
                handle.write(orders_text(next_id, 10).split("\n", 1)[1])
            next_id += 10
            time.sleep(0.2)
        (inbound.drop / "last_id").write_text(str(next_id - 1))

    writer = threading.Thread(target=partner_writes)
    writer.start()
    try:
        first = inbound.run(settle_seconds=2)
    finally:
        done.set()
        writer.join()
    last_id = int((inbound.drop / "last_id").read_text())
    (inbound.drop / "last_id").unlink()
    assert first.state.is_completed(), tail(inbound.log)
    assert "orders_2.csv: still growing" in tail(inbound.log)
    check_exactly_once(inbound, {"orders_1.csv": range(1, 101)})
    assert inbound.files() == ["orders_2.csv", *processed("orders_1.csv")]
    started = time.monotonic()
    second = inbound.run(settle_seconds=2)
    fault.cost(time.monotonic() - started)
    assert second.state.is_completed(), tail(inbound.log)
    check_exactly_once(
        inbound,
        {"orders_1.csv": range(1, 101), "orders_2.csv": range(1001, last_id + 1)},
    )
    assert inbound.files() == processed("orders_1.csv", "orders_2.csv")


@pytest.mark.faults
def test_malformed_line_fails_that_file_only(fault, inbound):
    """A file with a line of too few fields fails the run, named with the line; it
    moves to failed/ with none of its rows loaded; the other files load."""
    fault.expect("failed clean")
    fault.watch(inbound.log)
    inbound.drop_file("orders_1.csv", 1, 100)
    bad = orders_text(1001, 10).split("\n")
    bad[4] = "1004,acme"
    (inbound.drop / "orders_2.csv").write_text("\n".join(bad))
    inbound.drop_file("orders_3.csv", 2001, 100)
    final = inbound.run()
    assert final.state.is_failed(), tail(inbound.log)
    assert "1 of 3 files not loaded: orders_2.csv" in final.state.message
    assert "line 5" in final.state.message
    check_exactly_once(
        inbound, {"orders_1.csv": range(1, 101), "orders_3.csv": range(2001, 2101)}
    )
    assert inbound.files() == [
        "failed/orders_2.csv",
        *processed("orders_1.csv", "orders_3.csv"),
    ]


@pytest.mark.faults
def test_same_file_twice_is_archived_and_a_changed_one_loads(fault, inbound):
    """The partner sends the same file again: the run loads nothing and archives it
    beside the first, never over it. Then a changed file of that name: it loads."""
    fault.expect("recovered")
    fault.watch(inbound.log)
    inbound.drop_file("orders_1.csv", 1, 100)
    assert inbound.run().state.is_completed(), tail(inbound.log)
    inbound.drop_file("orders_1.csv", 1, 100)
    again = inbound.run()
    assert again.state.is_completed(), tail(inbound.log)
    check_exactly_once(inbound, {"orders_1.csv": range(1, 101)})
    inbound.drop_file("orders_1.csv", 101, 50)
    changed = inbound.run()
    assert changed.state.is_completed(), tail(inbound.log)
    check_exactly_once(
        inbound, {"orders_1.csv": range(1, 101), "orders_1.csv#2": range(101, 151)}
    )
    assert inbound.files() == processed(
        "orders_1.2.csv", "orders_1.3.csv", "orders_1.csv"
    )
    [archived] = (inbound.drop / "processed").glob("*/orders_1.2.csv")
    assert archived.read_text() == orders_text(1, 100)


@pytest.mark.faults
def test_run_killed_after_claiming_the_next_run_adopts_the_file(fault, inbound):
    """The flow-run process is killed once it has claimed the large file: the file
    waits in the dead run's claim folder, where no partner upload reaches it; the
    next run finds the folder's lock free (the dead run's connection went with
    it), adopts the file, loads it once and archives it."""
    fault.expect("recovered")
    fault.watch(inbound.log)
    inbound.drop_file("orders_1.csv", 1, LARGE_ROWS)
    flow_run = inbound.start()
    pid = process_of(flow_run)
    claimed = inbound.drop / claimed_by(flow_run, "orders_1.csv")
    wait_for(claimed.exists, "the claimed file")
    os.kill(pid, signal.SIGKILL)
    killed = asyncio.run(read_when_final(flow_run))
    assert killed.state.is_crashed(), tail(inbound.log)
    assert inbound.files() == [claimed_by(flow_run, "orders_1.csv")]
    assert inbound.sql(f"SELECT count(*) FROM {TABLE}") == [(0,)]
    next_run_completes(inbound, fault)
    assert (
        f"orders_1.csv: claimed by run {flow_run.id}, which ended before it was "
        "done: adopted" in tail(inbound.log)
    )
    check_exactly_once(inbound, {"orders_1.csv": range(1, 1 + LARGE_ROWS)})
    assert inbound.files() == processed("orders_1.csv")


@pytest.mark.faults
def test_two_runs_at_once_load_each_file_once(fault, inbound):
    """Two runs of the pick-up start together over the same twelve files: each file
    is claimed by one run only, both runs complete, and every file is loaded once
    and archived once."""
    fault.expect("recovered")
    fault.watch(inbound.log)
    good = {f"orders_{n}.csv": range(n * 1000, n * 1000 + 500) for n in range(1, 13)}
    for name, ids in good.items():
        inbound.drop_file(name, ids.start, len(ids))
    started = time.monotonic()
    runs = [inbound.start(settle_seconds=0), inbound.start(settle_seconds=0)]
    finals = [asyncio.run(read_when_final(run)) for run in runs]
    fault.cost(time.monotonic() - started)
    assert [final.state.is_completed() for final in finals] == [True, True], tail(
        inbound.log
    )
    check_exactly_once(inbound, good)
    assert inbound.files() == processed(*sorted(good))
    loaded_by = inbound.sql(
        "SELECT count(DISTINCT flow_run_id) FROM flows_inbound_ledger"
    )
    print(f"files loaded by {loaded_by[0][0]} of the 2 runs")


@pytest.mark.faults
def test_a_new_upload_under_the_same_name_mid_load_waits_for_the_next_run(
    fault, inbound
):
    """While the large orders_1.csv loads, the partner uploads a new orders_1.csv
    (written aside, renamed in): the run archives the file it loaded, never the new
    one, which waits in the drop folder; the next run loads it."""
    fault.expect("recovered")
    fault.watch(inbound.log)
    inbound.drop_file("orders_1.csv", 1, LARGE_ROWS)
    flow_run = inbound.start()
    wait_for(lambda: copy_under_way(inbound), "COPY under way")
    inbound.drop_file("orders_1.csv", 900_001, 50)
    first = asyncio.run(read_when_final(flow_run))
    assert first.state.is_completed(), tail(inbound.log)
    check_exactly_once(inbound, {"orders_1.csv": range(1, 1 + LARGE_ROWS)})
    assert inbound.files() == ["orders_1.csv", *processed("orders_1.csv")]
    assert (inbound.drop / "orders_1.csv").read_text() == orders_text(900_001, 50)
    next_run_completes(inbound, fault)
    check_exactly_once(
        inbound,
        {
            "orders_1.csv": range(1, 1 + LARGE_ROWS),
            "orders_1.csv#2": range(900_001, 900_051),
        },
    )
    assert inbound.files() == processed("orders_1.2.csv", "orders_1.csv")


@pytest.fixture
def notified(prefect_api_url, capsys, monkeypatch):
    """`setup --notify` with a receiver on 127.0.0.1: failed main runs post to it.
    The server's policies are this test's alone, before and after."""
    del prefect_api_url
    asyncio.run(delete_notifications())
    for running in serving_receiver():
        monkeypatch.setenv("FLOWS_NOTIFY_URLS", running.url)
        code, _, err = setup_notify(capsys)
        assert code == 0, err
        yield running
    asyncio.run(delete_notifications())


def test_a_missing_file_fails_the_run_in_one_line_and_the_notification_posts(
    inbound, notified
):
    """The partner's file is expected by 00:00 UTC and none has come: the run fails
    with one line saying what was expected, by when, and what came last, and the
    failure notification carries that line."""
    source = SftpDropFolder(sftp_connection_to(inbound.sshd, str(inbound.drop)))
    final = inbound.run(expect_by="00:00")
    assert final.state.is_failed(), tail(inbound.log)
    [day] = [
        day
        for day in utc_days_of_this_test()
        if f"00:00 UTC on {day};" in final.state.message
    ]
    line = (
        f"expected 1 file matching orders_*.csv in {source.describe()} by 00:00 UTC "
        f"on {day}; 0 came; none has come yet"
    )
    assert final.state.message.endswith(f"ExpectedFilesMissing: {line}")
    posts = notified.wait_for_posts(1, NOTIFY_WAIT_SECONDS)
    assert posts, f"nothing posted within {NOTIFY_WAIT_SECONDS} s"
    text = json.loads(posts[0])["text"]
    print(f"\n--- posted ---\n{text}\n---")
    assert (
        f"Error: Flow run encountered an exception. ExpectedFilesMissing: {line}"
        in (text.splitlines())
    )
