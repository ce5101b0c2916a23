"""Faults a nightly run meets, against real servers: what is retried, what is not.

PostgreSQL is restarted (`pg_ctl restart -m fast`) in the middle of an extract in each
of the three delivery paths, inside a flow run so that Prefect's retries apply: the
run completes and the file is byte for byte what a run without the fault writes. A
wrong password and bad SQL are tried once. The server here is this module's own: the
session's is never restarted.
"""

import asyncio
import contextlib
import errno
import os
import threading
import time
from dataclasses import dataclass

import paramiko
import psycopg2
import pytest
from conftest import FIXTURE_FLOWS_DIR, fresh_database, serve, sftp_connection_to
from fixture_data import load_fixture_data
from prefect import flow, get_client, task
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.blocks.system import Secret
from sqlalchemy import create_engine, exc, text

import services
from toolkit import database
from toolkit import delivery
from toolkit import retries
from toolkit import sftp
from toolkit.database import DatabaseConnection

ROWS = 300_000
# Rows that PostgreSQL makes with a pause every 25,000 (1.2 s in all), sent as it
# makes them (no ORDER BY: a sort would make them all first), so that the database
# is still sending when the sink has a few MB, however far a reader buffers ahead.
EXTRACT = """
SELECT g AS id, md5(g::text) AS token, g * 0.25 AS amount,
       timestamp '2024-01-01' + g * interval '1 second' AS happened,
       CASE WHEN g % 25000 = 0 THEN pg_sleep(0.1)::text END AS pause
FROM generate_series(1, :rows) AS g
"""
# The server pauses once, half way, so that a restart lands while rows still flow.
PAUSING_EXTRACT = """
SELECT g AS id, md5(g::text) AS token,
       CASE WHEN g = :rows / 2 THEN pg_sleep(1)::text END AS pause
FROM generate_series(1, :rows) AS g
"""
RESTART_AFTER_BYTES = 2 * 1024 * 1024
QUICK_RETRIES = {**retries.TRANSIENT_RETRIES, "retry_delay_seconds": 1}
# A retry of a permanent error would wait this long: a run that ends sooner tried once.
SLOW_RETRIES = {**retries.TRANSIENT_RETRIES, "retry_delay_seconds": 30}


@pytest.fixture(scope="module")
def restartable_postgres():
    """A PostgreSQL of this module's own, which its tests restart."""
    yield from serve(services.running_postgres)


def connection_to(server, password: str | None = None) -> DatabaseConnection:
    """An unsaved connection block, as a flow loads one: URL apart from the secret."""
    return DatabaseConnection(
        url=server.url(password=False),
        password=Secret(value=password or server.password),
    )


# A plain class, not a dataclass: Prefect rebuilds dataclasses among a task's
# parameters, and the test must read what the task's copy recorded.
class RestartOnce:  # pylint: disable=too-few-public-methods
    """Restarts the server once; records what the sink's folder held at that moment."""

    def __init__(self, server, folder):
        self.server = server
        self.folder = folder
        self.done = threading.Event()
        self.files_at_restart: list[str] | None = None

    def restart(self) -> None:
        """Restart now, unless done already."""
        if self.done.is_set():
            return
        self.done.set()
        self.files_at_restart = (
            sorted(os.listdir(self.folder)) if self.folder.exists() else []
        )
        self.server.restart()


@contextlib.contextmanager
def restarting_after_a_few_megabytes(opened, fault: RestartOnce):
    """A sink's stream that restarts the database once RESTART_AFTER_BYTES went by."""
    with opened as stream:
        write = stream.write

        def write_then_restart(data):
            written = write(data)
            if stream.bytes_written >= RESTART_AFTER_BYTES:
                fault.restart()
            return written

        stream.write = write_then_restart
        yield stream


@dataclass(frozen=True)
class RestartingFolderSink(delivery.LocalFolderSink):
    """A local folder whose first file restarts the database after a few MB."""

    fault: RestartOnce | None = None

    def open(self, file_name, progress=None):
        opened = super().open(file_name, progress)
        return restarting_after_a_few_megabytes(opened, self.fault)


@dataclass(frozen=True)
class RestartingSftpSink(delivery.SftpSink):
    """An SFTP folder whose first file restarts the database after a few MB."""

    fault: RestartOnce | None = None

    def open(self, file_name, progress=None):
        opened = super().open(file_name, progress)
        return restarting_after_a_few_megabytes(opened, self.fault)


@contextlib.contextmanager
def restart_during_pause(fault: RestartOnce, server):
    """Restart the server from a thread once a query sits in its pause (pg_sleep)."""
    # A transaction sees one snapshot of pg_stat_activity: each poll needs its own.
    engine = create_engine(server.url(), isolation_level="AUTOCOMMIT")

    def watch():
        deadline = time.monotonic() + 60
        with engine.connect() as connection:
            while time.monotonic() < deadline and not fault.done.is_set():
                pausing = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event = 'PgSleep'"
                    )
                ).scalar()
                if pausing:
                    break
                time.sleep(0.02)
        engine.dispose()
        if time.monotonic() < deadline:
            fault.restart()

    watcher = threading.Thread(target=watch, name="restart-watcher")
    watcher.start()
    try:
        yield
    finally:
        watcher.join()


async def read_task_run(task_run_id):
    """A task run as the API holds it."""
    async with get_client() as client:
        return await client.read_task_run(task_run_id)


def run_in_a_flow(deliver_task, *arguments, **keywords):
    """Run one task in a flow run of its own; the flow's state, the task's state and
    how many times the task ran."""
    seen = {}

    @flow
    def deliver():
        state = deliver_task(*arguments, return_state=True, **keywords)
        seen["state"] = state
        return state

    flow_state = deliver(return_state=True)
    task_run = asyncio.run(read_task_run(seen["state"].state_details.task_run_id))
    return flow_state, seen["state"], task_run.run_count


def extract_and_deliver(source, sink, query, parameters, file_name):
    """Query into a DataFrame, deliver it: as flows do in a task of their own."""
    frame = database.query_dataframe.fn(source, query, parameters)
    return delivery.deliver_frame.fn(sink, frame, file_name)


DELIVERY_PATHS = {
    "frame": (task(**QUICK_RETRIES)(extract_and_deliver), PAUSING_EXTRACT),
    "chunks": (delivery.deliver_query_in_chunks.with_options(**QUICK_RETRIES), EXTRACT),
    "as_is": (delivery.deliver_query_as_is.with_options(**QUICK_RETRIES), EXTRACT),
}


def deliver_with(path, source, sink, file_name):
    """The flow run of one delivery path; its states and the task's run count."""
    deliver_task, query = DELIVERY_PATHS[path]
    if path == "frame":
        return run_in_a_flow(
            deliver_task, source, sink, query, {"rows": ROWS}, file_name
        )
    return run_in_a_flow(
        deliver_task, source, query, sink, file_name, parameters={"rows": ROWS}
    )


@pytest.mark.faults
@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize(
    "path, sink_kind",
    [
        ("frame", "local"),
        ("chunks", "local"),
        ("as_is", "local"),
        ("chunks", "sftp"),
        ("as_is", "sftp"),
    ],
)
# pylint: disable-next=too-many-arguments,too-many-positional-arguments,too-many-locals
def test_restart_mid_extract_is_retried_to_the_same_file(
    path, sink_kind, restartable_postgres, tmp_path, request, fault
):
    """`pg_ctl restart -m fast` mid-stream: the task runs again from the query, the
    run completes, and the file equals a faultless run's, byte for byte."""
    fault.expect("recovered")
    source = connection_to(restartable_postgres)
    calm = delivery.LocalFolderSink(str(tmp_path / "calm"))
    started = time.monotonic()
    flow_state, _, run_count = deliver_with(path, source, calm, "extract.csv")
    calm_seconds = time.monotonic() - started
    assert flow_state.is_completed() and run_count == 1

    folder = tmp_path / "restarted"
    restart = RestartOnce(restartable_postgres, folder)
    started = time.monotonic()
    if path == "frame":  # the query is read whole before the sink sees a byte
        sink = delivery.LocalFolderSink(str(folder))
        with restart_during_pause(restart, restartable_postgres):
            flow_state, _, run_count = deliver_with(path, source, sink, "extract.csv")
    elif sink_kind == "local":
        sink = RestartingFolderSink(str(folder), restart)
        flow_state, _, run_count = deliver_with(path, source, sink, "extract.csv")
    else:  # the server's folder is on this disk: the test reads it directly
        connection = sftp_connection_to(request.getfixturevalue("sshd"), str(folder))
        sink = RestartingSftpSink(connection, restart)
        flow_state, _, run_count = deliver_with(path, source, sink, "extract.csv")

    fault.cost(time.monotonic() - started - calm_seconds)
    assert restart.done.is_set(), "the extract finished before the restart"
    assert "extract.csv" not in (restart.files_at_restart or [])
    assert flow_state.is_completed()
    assert run_count >= 2
    expected = (tmp_path / "calm" / "extract.csv").read_bytes()
    assert expected.count(b"\n") == ROWS + 1
    assert (folder / "extract.csv").read_bytes() == expected
    assert os.listdir(folder) == ["extract.csv"]  # no half file left beside it


@pytest.mark.faults
@pytest.mark.usefixtures("prefect_api_url")
def test_wrong_password_is_tried_once(restartable_postgres, tmp_path, fault):
    """A refused login is not retried (retries only lock accounts); the error says so."""
    fault.expect("failed clean")
    fault.secret("not-the-password")
    source = connection_to(restartable_postgres, password="not-the-password")
    sink = delivery.LocalFolderSink(str(tmp_path / "out"))
    started = time.monotonic()
    flow_state, task_state, run_count = run_in_a_flow(
        delivery.deliver_query_as_is.with_options(**SLOW_RETRIES),
        source,
        "SELECT 1 AS one",
        sink,
        "one.csv",
    )
    assert flow_state.is_failed() and run_count == 1
    assert time.monotonic() - started < 30
    error = task_state.result(raise_on_failure=False)
    assert "password authentication failed" in str(error)
    assert restartable_postgres.password not in str(error)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


@pytest.mark.faults
@pytest.mark.usefixtures("prefect_api_url")
def test_bad_sql_is_tried_once(restartable_postgres, tmp_path, fault):
    """A query the server cannot run fails the task at once, nothing delivered."""
    fault.expect("failed clean")
    sink = delivery.LocalFolderSink(str(tmp_path / "out"))
    started = time.monotonic()
    flow_state, task_state, run_count = run_in_a_flow(
        delivery.deliver_query_in_chunks.with_options(**SLOW_RETRIES),
        connection_to(restartable_postgres),
        "SELEC id FROM nowhere",
        sink,
        "bad.csv",
    )
    assert flow_state.is_failed() and run_count == 1
    assert time.monotonic() - started < 30
    assert "syntax error" in str(task_state.result(raise_on_failure=False))
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def raised_by(engine, statement: str) -> BaseException:
    """The error `statement` raises on `engine`, as SQLAlchemy wraps it."""
    with pytest.raises(exc.DBAPIError) as raised:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
    engine.dispose()
    return raised.value


@pytest.fixture(scope="module")
def real_errors(restartable_postgres):
    """Errors of a real server, each wrapped by SQLAlchemy as flows see them."""
    server = restartable_postgres
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS guarded")
        connection.exec_driver_sql("CREATE TABLE guarded (id integer)")
        connection.exec_driver_sql("DROP ROLE IF EXISTS outsider")
        connection.exec_driver_sql("CREATE ROLE outsider LOGIN PASSWORD 'outsider'")
        connection.exec_driver_sql("DROP ROLE IF EXISTS crowded")
        connection.exec_driver_sql(
            "CREATE ROLE crowded LOGIN PASSWORD 'crowded' CONNECTION LIMIT 1"
        )
        connection.exec_driver_sql("GRANT SELECT ON guarded TO crowded")
    crowded = f"postgresql+psycopg2://crowded:crowded@127.0.0.1:{server.port}/postgres"
    outsider = (
        f"postgresql+psycopg2://outsider:outsider@127.0.0.1:{server.port}/postgres"
    )
    wrong = server.url().replace(server.password, "not-the-password")
    refused = f"postgresql+psycopg2://flows:x@127.0.0.1:{services.free_port()}/postgres"
    errors = {
        "bad SQL": raised_by(admin, "SELEC 1"),
        "missing table": raised_by(admin, "SELECT * FROM no_such_table"),
        "permission denied": raised_by(
            create_engine(outsider), "SELECT * FROM guarded"
        ),
        "wrong password": raised_by(create_engine(wrong), "SELECT 1"),
        "missing database": raised_by(
            create_engine(server.url(database="no_such_database")), "SELECT 1"
        ),
        "refused port": raised_by(create_engine(refused), "SELECT 1"),
    }
    # A server (here a role) with no connection left for now, as a burst of
    # scheduled runs meets at 05:00: the first connection holds the only one.
    holder = create_engine(crowded)
    with holder.connect():
        errors["no connection slot left"] = raised_by(
            create_engine(crowded), "SELECT 1"
        )
    holder.dispose()
    admin.dispose()
    return errors


@pytest.mark.faults
@pytest.mark.parametrize(
    "case, transient",
    [
        ("bad SQL", False),
        ("missing table", False),
        ("permission denied", False),
        ("wrong password", False),
        ("missing database", False),
        ("refused port", True),
        ("no connection slot left", True),
    ],
)
def test_real_errors_are_classified(real_errors, case, transient):
    """Errors of a real server, through SQLAlchemy's wrapper, each told right."""
    assert retries.is_transient(real_errors[case]) is transient, real_errors[case]


class DriverError(Exception):
    """A stand-in for a driver's error that carries a SQLSTATE (psycopg2's pgcode)."""

    def __init__(self, message: str, pgcode: str | None):
        super().__init__(message)
        self.pgcode = pgcode


@pytest.mark.parametrize(
    "sqlstate, transient",
    [
        ("08006", True),  # connection failure
        ("08001", True),  # could not establish a connection
        ("57P01", True),  # admin shutdown
        ("57P02", True),  # crash shutdown
        ("57P03", True),  # cannot connect now (starting up, shutting down)
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock detected
        ("42601", False),  # syntax error
        ("42P01", False),  # undefined table
        ("42501", False),  # insufficient privilege
        ("28P01", False),  # invalid password
        ("57014", False),  # query cancelled (a statement timeout: retrying repeats it)
    ],
)
def test_sqlstates_are_classified(sqlstate, transient):
    """The SQLSTATE decides, however deep SQLAlchemy's wrapper holds the error."""
    driver_error = DriverError("failed", sqlstate)
    wrapped = exc.OperationalError("SELECT 1", {}, driver_error)
    assert retries.is_transient(driver_error) is transient
    assert retries.is_transient(wrapped) is transient
    try:
        raise RuntimeError("while streaming") from wrapped
    except RuntimeError as outer:
        assert retries.is_transient(outer) is transient


@pytest.mark.parametrize(
    "message, transient",
    [
        ("server closed the connection unexpectedly\n\tThis probably means", True),
        ("terminating connection due to administrator command", True),
        ('connection to server at "db", port 5432 failed: Connection refused', True),
        ("FATAL:  the database system is starting up", True),
        ("FATAL:  sorry, too many clients already", True),
        ("FATAL:  remaining connection slots are reserved for roles with", True),
        ("FATAL:  the database system is not yet accepting connections", True),
        ("connection already closed", True),
        ("error with status PGRES_COPY_OUT and no message from the libpq", True),
        ('FATAL:  password authentication failed for user "flows"', False),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1"', False),
        ('FATAL:  database "x" does not exist', False),
        ("something no one has seen", False),
    ],
)
def test_libpq_messages_without_sqlstate_are_classified(message, transient):
    """psycopg2 gives no SQLSTATE for connection errors: libpq's words decide."""
    error = psycopg2.OperationalError(message)
    assert error.pgcode is None
    assert retries.is_transient(error) is transient


@pytest.fixture
def fixture_blocks_on_restartable_postgres(
    restartable_postgres, sshd, tmp_path, monkeypatch, prefect_api_url
):
    """The fixture flow's main blocks, its database on the server this module
    restarts; the partner's folder is returned."""
    del prefect_api_url  # the blocks are saved on the session's server
    monkeypatch.setattr(database, "SQL_DIR", FIXTURE_FLOWS_DIR / "sql")
    server = restartable_postgres
    shop = fresh_database(server, "shop")
    load_fixture_data(shop)
    shop.dispose()
    DatabaseConnection(
        url=server.url(password=False, database="shop"),
        password=Secret(value=server.password),
    ).save("fixture-database-main", overwrite=True)
    partner = tmp_path / "partner" / "nightly"
    sftp_connection_to(sshd, str(partner)).save("fixture-sftp-main", overwrite=True)
    return partner


async def task_runs_of(flow_run_id) -> list:
    """The task runs of one flow run, as the API holds them."""
    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


@pytest.mark.faults
def test_fixture_flow_outlives_a_database_restart(  # pylint: disable=too-many-locals
    fixture_blocks_on_restartable_postgres,
    restartable_postgres,
    tmp_path,
    monkeypatch,
    fault,
):
    """The template's fixture flow, main, against PostgreSQL and sshd: the database is
    down when its tasks first connect (refused) and back 2 s later. The tasks retry,
    the run completes, and its files are a dev run's, byte for byte."""
    # pylint: disable-next=import-outside-toplevel
    from fixture_flow import fixture_flow

    fault.expect("recovered")
    partner = fixture_blocks_on_restartable_postgres
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "dev-output"))
    dev_rows = fixture_flow(env="dev")
    started = time.monotonic()
    assert fixture_flow(env="main", return_state=True).is_completed()
    calm_seconds = time.monotonic() - started

    restartable_postgres.stop()
    starter = threading.Timer(2.0, restartable_postgres.start)
    started = time.monotonic()
    starter.start()
    try:
        state = fixture_flow(env="main", return_state=True)
    finally:
        starter.join()
    fault.cost(time.monotonic() - started - calm_seconds)

    assert state.is_completed()
    assert state.result() == dev_rows
    task_runs = asyncio.run(task_runs_of(state.state_details.flow_run_id))
    extracts = [run for run in task_runs if run.name.startswith("extract ")]
    assert len(extracts) == 2 and all(run.run_count >= 2 for run in extracts)
    assert sorted(os.listdir(partner)) == sorted(dev_rows)
    for name in dev_rows:
        dev_file = tmp_path / "dev-output" / "dev" / name
        assert (partner / name).read_bytes() == dev_file.read_bytes()


@pytest.mark.parametrize(
    "error, transient",
    [
        (ConnectionResetError("reset by peer"), True),
        (EOFError(), True),
        (paramiko.SSHException("Server connection dropped"), True),
        (paramiko.AuthenticationException("refused"), False),
        (sftp.HostKeyRefused("not in the connection's known_hosts"), False),
        (FileNotFoundError("no such file"), False),
        (PermissionError("denied"), False),
        (OSError("Operation unsupported"), False),  # paramiko's SFTP status, no errno
        (sftp.RenameRefused("refused to rename"), False),
        (OSError("Socket is closed"), True),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), False),
        (FileExistsError(errno.EEXIST, "File exists"), False),
        (IsADirectoryError(errno.EISDIR, "Is a directory"), False),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), False),
        (ValueError("bad row"), False),
    ],
)
def test_sftp_and_other_errors_are_classified(error, transient):
    """SFTP network faults stay retried; refusals, missing files, names taken, a
    folder for a file, full disks and bugs are not."""
    assert retries.is_transient(error) is transient
