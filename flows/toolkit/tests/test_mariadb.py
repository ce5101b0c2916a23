"""MariaDB as a warehouse, against a real mariadbd on 127.0.0.1 (the load modes and
the ledger run in test_loading.py's MariaDB cases): the three extract paths write
exact values, and those files load back equal; a duplicate key refuses the file in
one line; a server restarted mid-load is retried and loads the file once; a live
run's claims hold on MariaDB's named lock."""

import io
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import fresh_mariadb_database
from prefect import flow
from prefect.blocks.system import Secret
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from toolkit import claims, database, delivery, inbound, loading, pickup
from toolkit.database import DatabaseConnection
from toolkit.inbound import PickupRules
from toolkit.loading import LoadPlan

pytestmark = [pytest.mark.mariadb, pytest.mark.usefixtures("prefect_api_url")]

CREATE_VALUES = (
    "CREATE TABLE {table} (id integer PRIMARY KEY, amount decimal(38, 10), "
    "happened datetime(6), note mediumtext)"
)
# Every character of one, two and three bytes in UTF-8 but the surrogates, and four-
# byte ones: the note of row 2 (row 1 is what a partner would send).
EVERY_CHARACTER = (
    "".join(chr(code) for code in range(1, 0x10000) if not 0xD800 <= code < 0xE000)
    + "\U0001f600\U0010ffff"
)
VALUES = [
    (1, Decimal("12345678901234567890.1234567890"), "2024-01-01 08:00:00.5", "ada"),
    (2, Decimal("-0.0000000001"), "2024-07-31 23:59:59.999999", EVERY_CHARACTER),
    (3, None, None, None),
    (4, Decimal("0"), "1999-12-31 00:00:00", ""),
]
PATHS = ("frame", "chunks", "as_is")
MODIFIED = datetime(2026, 12, 7, 5, 0, tzinfo=timezone.utc)


@pytest.fixture
def warehouse(mariadb):
    """An engine of a fresh MariaDB database holding the values table."""
    engine = fresh_mariadb_database(mariadb, "warehouse")
    with engine.begin() as connection:
        connection.execute(text(CREATE_VALUES.format(table="exact_values")))
        connection.execute(
            text("INSERT INTO exact_values VALUES (:id, :amount, :happened, :note)"),
            [dict(zip(("id", "amount", "happened", "note"), row)) for row in VALUES],
        )
    yield engine
    engine.dispose()


def rows_of(engine, table: str) -> list[tuple]:
    """The table's rows by id."""
    with engine.connect() as connection:
        return connection.execute(text(f"SELECT * FROM {table} ORDER BY id")).all()


def deliver(path: str, engine, folder: Path) -> Path:
    """Deliver the values table one way as a CSV into `folder`; the file."""
    query, sink = "SELECT * FROM exact_values ORDER BY id", delivery.LocalFolderSink(
        str(folder)
    )
    if path == "frame":
        frame = database.query_dataframe.fn(engine, query)
        delivery.deliver_frame.fn(sink, frame, "values.csv")
    elif path == "chunks":
        delivery.deliver_query_in_chunks.fn(
            engine, query, sink, "values.csv", chunk_rows=2
        )
    else:
        delivery.deliver_query_as_is.fn(engine, query, sink, "values.csv")
    return folder / "values.csv"


@pytest.mark.parametrize("path", PATHS)
def test_each_extract_path_writes_values_that_load_back_equal(
    warehouse, path, tmp_path
):
    """Decimals of 30 digits, times to the microsecond, NULL, an empty string and
    text of every character: extracted one way, the file loads back into a table
    of the same columns with every value equal."""
    written = deliver(path, warehouse, tmp_path)
    content = written.read_bytes()
    assert content.startswith(b"id,amount,happened,note\n")
    assert b"12345678901234567890.1234567890" in content
    assert b"2024-07-31 23:59:59.999999" in content
    with warehouse.begin() as connection:
        connection.execute(text(CREATE_VALUES.format(table="loaded_back")))
    listing = loading.Listing(str(tmp_path), "values.csv", len(content), MODIFIED)
    with written.open("rb") as stream:
        outcome = loading.load_stream(
            warehouse, stream, LoadPlan("loaded_back"), listing
        )
    assert outcome.loaded and outcome.rows == len(VALUES)
    assert rows_of(warehouse, "loaded_back") == rows_of(warehouse, "exact_values")


@pytest.mark.faults
def test_a_duplicate_key_refuses_the_file_in_one_line(fault, warehouse):
    """A file whose key is in the table already: BadFile naming the file and the
    key, nothing of it loaded, the ledger unchanged."""
    fault.expect("failed clean")
    content = b"id,amount,happened,note\n9,1,,new\n1,2,,again\n"
    listing = loading.Listing("/drop", "dup.csv", len(content), MODIFIED)
    with pytest.raises(loading.BadFile) as refused:
        loading.load_stream(
            warehouse, io.BytesIO(content), LoadPlan("exact_values"), listing
        )
    line = str(refused.value)
    assert line.startswith("dup.csv: ") and "Duplicate entry '1'" in line
    assert line.endswith("nothing was loaded") and "\n" not in line
    assert [row[0] for row in rows_of(warehouse, "exact_values")] == [1, 2, 3, 4]
    with warehouse.connect() as connection:
        assert (
            connection.execute(
                text("SELECT COUNT(*) FROM flows_inbound_ledger")
            ).scalar()
            == 0
        )


@flow
def pick_up(folder, block_name: str):
    """A pick-up run into MariaDB, its connection from a block, as a team's flow
    has it."""
    return inbound.pick_up_and_load(
        folder,
        DatabaseConnection.load(block_name),
        LoadPlan("orders"),
        PickupRules(settle_seconds=0),
    )


def orders_file(rows: int) -> bytes:
    """A partner's orders file of `rows` rows."""
    lines = [b"order_id,customer,amount\n"]
    lines += [f"{i},customer {i % 97},{i % 1000}.{i % 100:02d}\n".encode()
              for i in range(1, rows + 1)]  # fmt: skip
    return b"".join(lines)


def insert_under_way(mariadb) -> bool:
    """Whether a session of the server is inserting into the staging or the target."""
    engine = fresh_admin(mariadb)
    try:
        with engine.connect() as connection:
            return bool(
                connection.execute(
                    text(
                        "SELECT COUNT(*) FROM information_schema.processlist "
                        "WHERE info LIKE 'INSERT INTO%orders%'"
                    )
                ).scalar()
            )
    finally:
        engine.dispose()


def fresh_admin(mariadb):
    """An engine of the server with no database chosen."""
    return create_engine(mariadb.url(database=""), pool_pre_ping=True)


@pytest.mark.faults
def test_a_server_restarted_mid_load_is_retried_and_loads_the_file_once(
    fault, mariadb, tmp_path
):  # pylint: disable=too-many-locals
    """MariaDB shuts down and starts again while the file's rows go in: that try
    rolls back, the task's retry loads the file whole, and the run completes with
    every row once and one ledger row."""
    fault.expect("recovered")
    engine = fresh_mariadb_database(mariadb, "orders_target")
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE orders (order_id int PRIMARY KEY, customer text, "
                 "amount decimal(10, 2))")
        )  # fmt: skip
    drop = tmp_path / "drop"
    drop.mkdir()
    rows = 300_000
    (drop / "orders_1.csv").write_bytes(orders_file(rows))
    url = make_url(mariadb.url(database="orders_target"))
    DatabaseConnection(
        url=url.set(password=None).render_as_string(hide_password=False),
        password=Secret(value=mariadb.password),
    ).save("orders-mariadb", overwrite=True)
    restarted = threading.Event()

    def restart_when_under_way():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not insert_under_way(mariadb):
            time.sleep(0.05)
        mariadb.restart()
        restarted.set()

    restarter = threading.Thread(target=restart_when_under_way)
    restarter.start()
    started = time.monotonic()
    state = pick_up(pickup.LocalDropFolder(drop), "orders-mariadb", return_state=True)
    restarter.join()
    fault.cost(time.monotonic() - started)
    assert restarted.is_set()
    assert state.is_completed(), state.message
    with engine.connect() as connection:
        count, distinct = connection.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT order_id) FROM orders")
        ).one()
        ledger_rows = connection.execute(
            text("SELECT COUNT(*) FROM flows_inbound_ledger")
        ).scalar()
    assert (count, distinct, ledger_rows) == (rows, rows, 1)
    engine.dispose()


def test_a_live_runs_claims_hold_on_mariadbs_named_lock(mariadb, tmp_path):
    """Run A claims a file and lives: run B leaves A's claim. A ends (its session
    closes, the lock goes): run C adopts the file."""
    engine = fresh_mariadb_database(mariadb, "claims_target")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.csv").write_text("id\n1\n")
    folder = pickup.LocalDropFolder(drop)
    rules = PickupRules(settle_seconds=0)
    with claims.ClaimLocks(engine, folder.describe(), "run-a") as run_a:
        inbound.claim_files.fn(folder, folder.list_files("*.csv"), rules, run_a)
        with claims.ClaimLocks(engine, folder.describe(), "run-b") as run_b:
            assert not inbound.claim_files.fn(folder, [], rules, run_b)
    with claims.ClaimLocks(engine, folder.describe(), "run-c") as run_c:
        adopted = inbound.claim_files.fn(folder, [], rules, run_c)
    assert [c.path for c in adopted] == ["claimed/run-c/a.csv"]
    engine.dispose()
