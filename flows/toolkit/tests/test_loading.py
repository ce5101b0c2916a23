"""Loading CSV files into a real PostgreSQL and into SQLite: modes, the header, bad
values, exact values, and the ledger that makes a second load of a file a no-op."""

import io
import logging
import re
import threading
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from conftest import fresh_database, fresh_mariadb_database
from fault_proxy import FaultProxy
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool
from test_faults import QUICK_RETRIES, run_in_a_flow

from toolkit import delivery
from toolkit import ledger
from toolkit import loading
from toolkit.loading import LoadPlan
from toolkit.streams import Progress

pytestmark = pytest.mark.inbound

CREATE_PAYMENTS = """
CREATE TABLE payments (
    id integer PRIMARY KEY, student text NOT NULL, amount numeric(12, 2),
    day text, paid_at timestamp, note text
)
"""
HEADER = "id,student,amount,day,paid_at,note\n"
MONDAY = HEADER + (
    '1,"ada",12.50,2024-08-01,2024-08-01 08:00:00.000000,""\n'
    '2,"alan",-3.00,2024-08-01,2024-08-01 08:00:01.500000,\n'
)
TUESDAY = HEADER + (
    '2,"alan",4.25,2024-08-02,2024-08-02 09:00:00.000000,"late"\n'
    '3,"grace",7.00,2024-08-02,2024-08-02 09:30:00.250000,"x, y"\n'
)
MODIFIED = datetime(2024, 8, 2, 6, 0, tzinfo=timezone.utc)


@pytest.fixture(
    params=["postgresql", "sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)]
)
def engine(request, tmp_path):
    """An empty payments table in PostgreSQL (COPY), or SQLite or MariaDB (batched
    INSERTs, the generic path)."""
    if request.param == "postgresql":
        made = fresh_database(request.getfixturevalue("postgres"), "loading_tests")
    elif request.param == "mariadb":
        made = fresh_mariadb_database(
            request.getfixturevalue("mariadb"), "loading_tests"
        )
    else:
        made = create_engine(f"sqlite:///{tmp_path / 'target.sqlite'}")
    with made.begin() as connection:
        connection.execute(text(CREATE_PAYMENTS))
    yield made
    made.dispose()


def load(engine, content: str, plan: LoadPlan, name: str = "payments.csv"):
    """Load `content` as the file `name`."""
    data = content.encode()
    listing = loading.Listing("/drop", name, len(data), MODIFIED)
    return loading.load_stream(
        engine, io.BytesIO(data), plan, listing, flow_run_id="run-1"
    )


def rows_of(engine) -> list[tuple]:
    """The payments, by id, amounts as text (SQLite's numbers are its own)."""
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT id, student, amount, day, note FROM payments ORDER BY id")
        )
        return [(i, s, str(a), d, n) for i, s, a, d, n in found]


def test_append_then_upsert_keeps_one_row_per_key(engine):
    """Append loads every row; an upsert replaces the rows of its keys, adds others."""
    first = load(engine, MONDAY, LoadPlan("payments"))
    second = load(engine, TUESDAY, LoadPlan("payments", "upsert", ("id",)), "t.csv")
    assert (first.rows, first.loaded, second.rows) == (2, True, 2)
    found = rows_of(engine)
    assert [row[:2] for row in found] == [(1, "ada"), (2, "alan"), (3, "grace")]
    assert found[0][4] == "" and found[1][4] == "late" and found[2][4] == "x, y"
    assert Decimal(found[1][2]) == Decimal("4.25")


def test_replace_deletes_what_the_condition_selects(engine):
    """replace: the rows of the file's day go, the file's rows come, the rest stays."""
    load(engine, MONDAY, LoadPlan("payments"))
    load(engine, TUESDAY.replace("2,", "5,", 1), LoadPlan("payments"), "t.csv")
    plan = LoadPlan(
        "payments",
        "replace",
        replace_where="day IN (SELECT day FROM flows_staged)",
    )
    load(engine, HEADER + '9,"edsger",1.00,2024-08-02,,\n', plan, "fix.csv")
    assert [row[0] for row in rows_of(engine)] == [1, 2, 9]


def test_truncate_leaves_only_the_file(engine):
    """truncate: the table holds the file's rows only."""
    load(engine, MONDAY, LoadPlan("payments"))
    load(engine, TUESDAY, LoadPlan("payments", "truncate"), "t.csv")
    assert [row[0] for row in rows_of(engine)] == [2, 3]


def test_the_same_content_loads_once(engine):
    """A second load of the same bytes (another name too) is rolled back: the table
    and the ledger hold it once; a changed file of the same name loads."""
    assert load(engine, MONDAY, LoadPlan("payments")).loaded
    again = load(engine, MONDAY, LoadPlan("payments"), "copy-of-payments.csv")
    assert not again.loaded and "already loaded" in again.reason
    changed = MONDAY.replace("\n1,", "\n7,").replace("\n2,", "\n8,")
    assert load(engine, changed, LoadPlan("payments")).loaded
    with engine.connect() as connection:
        found = ledger.LEDGER.c  # `rows` is a reserved word in MariaDB: quoted
        entries = connection.execute(
            select(found.path, found.rows, found.mode, found.flow_run_id)
        ).all()
    assert sorted(entries) == [("payments.csv", 2, "append", "run-1")] * 2
    assert [row[0] for row in rows_of(engine)] == [1, 2, 7, 8]


def test_header_mismatch_names_the_columns_and_loads_nothing(engine):
    """A missing and an unknown column: one line naming both, nothing written."""
    content = "id,student,amount,day,paid,note\n1,a,1,d,,\n"
    with pytest.raises(loading.BadFile) as raised:
        load(engine, content, LoadPlan("payments"))
    message = str(raised.value)
    assert "\n" not in message
    assert "missing: paid_at" in message and "unknown: paid" in message
    assert rows_of(engine) == []


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_bad_value_names_line_column_value(engine, mode):
    """A bad number on line 3: the error names it, and no row of the file is kept."""
    content = MONDAY + '3,"grace",twelve,2024-08-01,,\n'
    plan = LoadPlan("payments", mode, ("id",) if mode == "upsert" else ())
    with pytest.raises(loading.BadFile) as raised:
        load(engine, content, plan)
    message = str(raised.value)
    assert "line 4, column amount, value 'twelve'" in message
    assert rows_of(engine) == []
    with engine.connect() as connection:
        assert not connection.execute(ledger.LEDGER.select()).all()


def test_malformed_line_fails_the_file(engine):
    """A line with a field too few fails the file; nothing is kept."""
    with pytest.raises(loading.BadFile):
        load(engine, MONDAY + "3,grace\n", LoadPlan("payments"))
    assert rows_of(engine) == []


def test_outbound_file_round_trips_exactly(postgres, tmp_path):
    """What a delivery writes (exact numerics, times with fraction and zone) loads
    back into the same table as the same values."""
    engine = fresh_database(postgres, "loading_exact")
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE source_values (id int, amount numeric(38, 10),"
                " happened timestamp, zoned timestamptz, name text);"
                "INSERT INTO source_values VALUES"
                " (1, 12345678901234567890.1234567890, '2024-01-01 08:00:02.5',"
                "  '2024-01-01 08:00:00.000001+02', 'a \"quoted\", name'),"
                " (2, NULL, NULL, NULL, ''), (3, 0.0000000001, NULL, NULL, NULL);"
                "CREATE TABLE loaded_values (LIKE source_values)"
            )
        )
    sink = delivery.LocalFolderSink(str(tmp_path))
    delivery.deliver_query_as_is.fn(
        engine, "SELECT * FROM source_values ORDER BY id", sink, "values.csv"
    )
    content = (tmp_path / "values.csv").read_text()
    assert load(engine, content, LoadPlan("loaded_values"), "values.csv").rows == 3
    with engine.connect() as connection:
        differences = connection.execute(
            text(
                "SELECT count(*) FROM (SELECT * FROM source_values"
                " EXCEPT SELECT * FROM loaded_values) AS d"
            )
        ).scalar()
        names = connection.execute(
            text("SELECT name IS NULL, name FROM loaded_values ORDER BY id")
        ).all()
    assert differences == 0
    assert names == [(False, 'a "quoted", name'), (False, ""), (True, None)]
    engine.dispose()


def test_run_sql_binds_parameters(postgres):
    """A step before or after a load: a statement with bound parameters."""
    engine = fresh_database(postgres, "loading_sql")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (day text)"))
        connection.execute(text("INSERT INTO t VALUES ('a'), ('b'), ('b')"))
    assert loading.run_sql.fn(engine, "DELETE FROM t WHERE day = :day", {"day": "b"})
    with engine.connect() as connection:
        assert connection.execute(text("SELECT day FROM t")).all() == [("a",)]
    engine.dispose()


def test_text_that_looks_missing_stays_text(engine):
    """NA, null and n/a are a partner's text, not missing values: only an empty
    unquoted field is NULL."""
    content = HEADER + '1,"NA",1,null,,n/a\n'
    load(engine, content, LoadPlan("payments"))
    assert rows_of(engine) == [
        (1, "NA", "1" if "sqlite" in str(engine.url) else "1.00", "null", "n/a")
    ]


def test_progress_lines_say_rows_megabytes_and_speed(engine, caplog):
    """While a file loads, progress lines give rows, MB and MB/s so far."""
    rows = "".join(f'{i},"s{i}",{i}.25,d,,\n' for i in range(1, 20_001))
    data = (HEADER + rows).encode()
    progress = Progress("big.csv", logging.getLogger("flows"), interval_seconds=0)
    listing = loading.Listing("/drop", "big.csv", len(data), MODIFIED)
    with caplog.at_level("INFO", logger="flows"):
        outcome = loading.load_stream(
            engine,
            io.BytesIO(data),
            LoadPlan("payments"),
            listing,
            progress=progress,
        )
    assert outcome.rows == 20_000
    assert re.search(
        r"big\.csv: [\d,]+ rows, [\d.]+ MB so far, [\d.]+ MB/s", caplog.text
    )
    assert progress.rows == 20_000


def test_two_loads_of_one_file_at_once_commit_it_once(postgres):
    """Two runs load the same file at the same moment: the ledger's unique key makes
    the second wait for the first, then roll back; the rows are there once."""
    engine = fresh_database(postgres, "loading_race")
    with engine.begin() as connection:
        connection.execute(text(CREATE_PAYMENTS.replace(" PRIMARY KEY", "")))
    outcomes = []
    threads = [
        threading.Thread(
            target=lambda: outcomes.append(load(engine, MONDAY, LoadPlan("payments")))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcome.loaded for outcome in outcomes) == [False, True]
    assert [row[0] for row in rows_of(engine)] == [1, 2]
    engine.dispose()


def test_replace_with_a_bound_parameter(engine):
    """replace's condition takes bound parameters: the day's rows go, others stay."""
    load(engine, MONDAY, LoadPlan("payments"))
    load(engine, TUESDAY.replace("\n2,", "\n5,"), LoadPlan("payments"), "t.csv")
    plan = LoadPlan(
        "payments",
        "replace",
        replace_where="day = :day",
        parameters={"day": "2024-08-01"},
    )
    load(engine, HEADER + '8,"ken",1.00,2024-08-01,,\n', plan, "monday-again.csv")
    assert [row[0] for row in rows_of(engine)] == [3, 5, 8]


def ledger_rows(engine) -> list[tuple]:
    """(sha256's first 8, mode) of the ledger's rows, oldest first."""
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT sha256, mode FROM flows_inbound_ledger ORDER BY id")
        )
        return [(sha[:8], mode) for sha, mode in found]


@pytest.mark.parametrize("mode", ["truncate", "replace"])
def test_a_snapshot_sent_again_after_another_loads_again(engine, mode):
    """Monday A, Tuesday B, Wednesday A again: a snapshot is skipped only while it
    is the table's latest load, so Wednesday loads and the table holds A. A fourth
    A is skipped, and so is a rerun that only finishes A's move."""
    plan = LoadPlan(
        "payments",
        mode,
        replace_where="true" if mode == "replace" else None,
    )
    snapshot_a, snapshot_b = MONDAY, TUESDAY
    assert load(engine, snapshot_a, plan, "snapshot.csv").loaded
    assert load(engine, snapshot_b, plan, "snapshot.csv").loaded
    wednesday = load(engine, snapshot_a, plan, "snapshot.csv")
    assert wednesday.loaded, wednesday.reason
    assert [row[0] for row in rows_of(engine)] == [1, 2]
    again = load(engine, snapshot_a, plan, "snapshot.csv")
    assert not again.loaded and "already loaded" in again.reason
    listing = loading.Listing("/drop", "snapshot.csv", len(snapshot_a), MODIFIED)

    def opener():
        return io.BytesIO(snapshot_a.encode())

    assert loading.content_loaded_before(engine, plan, listing, opener)
    load(engine, snapshot_b, plan, "snapshot.csv")
    assert not loading.content_loaded_before(engine, plan, listing, opener)
    hashes = ledger_rows(engine)
    assert [entry[1] for entry in hashes] == [mode, mode]
    print(f"\n{mode}: A, B, A, A (skipped), B: ledger {hashes}")


CREATE_ENROLMENTS = {
    "postgresql": "CREATE TABLE enrolments (id integer GENERATED ALWAYS AS IDENTITY "
    "PRIMARY KEY, student text NOT NULL UNIQUE, course text NOT NULL, "
    "enrolled_on date DEFAULT CURRENT_DATE)",
    "sqlite": "CREATE TABLE enrolments (id INTEGER PRIMARY KEY, student text NOT NULL "
    "UNIQUE, course text NOT NULL, enrolled_on date DEFAULT CURRENT_DATE)",
    "mysql": "CREATE TABLE enrolments (id integer AUTO_INCREMENT PRIMARY KEY, student "
    "varchar(100) NOT NULL UNIQUE, course text NOT NULL, enrolled_on date DEFAULT "
    "(CURRENT_DATE))",
}


@pytest.mark.parametrize("mode", ["append", "upsert", "replace", "truncate"])
def test_a_file_without_the_identity_column_loads_in_every_mode(engine, mode):
    """The table numbers its rows itself (an identity; SQLite's INTEGER PRIMARY KEY)
    and dates them by default: a file with neither column loads in every mode, the
    table filling both."""
    with engine.begin() as connection:
        connection.execute(text(CREATE_ENROLMENTS[engine.dialect.name]))
    plan = LoadPlan(
        "enrolments",
        mode,
        key=("student",) if mode == "upsert" else (),
        replace_where=(
            "student IN (SELECT student FROM flows_staged)"
            if mode == "replace"
            else None
        ),
    )
    content = "student,course\nada,math\nalan,logic\n"
    outcome = load(engine, content, plan, "enrolments.csv")
    assert outcome.loaded and outcome.rows == 2
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT id, student, course, enrolled_on FROM enrolments ORDER BY id")
        ).all()
    assert [row[1:3] for row in found] == [("ada", "math"), ("alan", "logic")]
    assert all(row[0] is not None and row[3] is not None for row in found)


def test_a_key_twice_in_an_upsert_file_is_a_bad_file(engine):
    """Two rows of one upsert file with the same key: one line naming the key and the
    count, nothing loaded, no ledger row, on PostgreSQL and SQLite alike."""
    load(engine, MONDAY, LoadPlan("payments"))
    twice = HEADER + (
        '2,"alan",1.00,2024-08-03,,\n'
        '5,"edsger",2.00,2024-08-03,,\n'
        '2,"alan",9.00,2024-08-03,,\n'
    )
    with pytest.raises(loading.BadFile) as refused:
        load(engine, twice, LoadPlan("payments", "upsert", ("id",)), "twice.csv")
    assert str(refused.value) == (
        "twice.csv: the key (id=2) is on 2 rows of the file: an upsert takes one row "
        "per key; nothing was loaded"
    )
    assert [row[0] for row in rows_of(engine)] == [1, 2]
    assert rows_of(engine)[1][2] in ("-3.00", "-3", "-3.0")
    assert len(ledger_rows(engine)) == 1


def test_a_line_of_only_backslash_dot_is_refused_and_a_quoted_one_loads(engine):
    """`\\.` alone on a line ends COPY FROM STDIN on PostgreSQL 17 and older: such a
    file is refused in one line (on SQLite too, as a line of one field: the same file,
    the same outcome); quoted, the same text loads."""
    bare = HEADER + '1,"ada",1.00,d,,\n\\.\n2,"alan",2.00,d,,\n3,"grace",3.00,d,,\n'
    with pytest.raises(loading.BadFile) as refused:
        load(engine, bare, LoadPlan("payments"), "marker.csv")
    if engine.dialect.name == "postgresql":
        assert "a line holds only \\. " in str(refused.value)
    print(f"\n{engine.dialect.name}: {refused.value}")
    assert rows_of(engine) == [] and ledger_rows(engine) == []
    quoted = HEADER + '1,"ada",1.00,d,,"\\."\n2,"alan",2.00,d,,\n'
    assert load(engine, quoted, LoadPlan("payments"), "quoted.csv").rows == 2
    assert rows_of(engine)[0][4] == "\\."


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("cut_at", [b"INSERT INTO tally", b"COMMIT"])
def test_run_sql_is_retried_before_its_commit_and_never_after(postgres, fault, cut_at):
    """A real cut connection (a proxy closes both sockets after forwarding the
    statement, or the COMMIT): cut with the statement, the transaction rolled back
    and a retry applies it once; cut with the COMMIT, the server committed but the
    client cannot know, so the task fails in one line, tried once, and the row is
    in the table once, not twice."""
    engine = fresh_database(postgres, "loading_commit")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE tally (n int)"))
    url = postgres.url(database="loading_commit")
    with FaultProxy(postgres.port, cut_after_pattern=cut_at) as proxy:
        through = url.replace(f":{postgres.port}/", f":{proxy.port}/")
        proxied = create_engine(through, poolclass=NullPool)
        flow_state, task_state, run_count = run_in_a_flow(
            loading.run_sql.with_options(**QUICK_RETRIES),
            proxied,
            "INSERT INTO tally VALUES (1)",
        )
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT count(*) FROM tally")).scalar()
    message = str(task_state.result(raise_on_failure=False))
    print(f"\ncut at {cut_at!r}: {run_count} tries, {rows} row(s), {message[:300]}")
    assert proxy.cut == 1 and rows == 1
    if cut_at == b"COMMIT":
        fault.expect("failed clean")
        assert flow_state.is_failed() and run_count == 1
        assert message.startswith("the connection broke while committing ")
    else:
        fault.expect("recovered")
        assert flow_state.is_completed() and run_count == 2
    engine.dispose()


UPDATE_AUDIT = {
    "postgresql": [
        "CREATE TABLE updates (id int)",
        "CREATE FUNCTION audit_update() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO updates VALUES (NEW.id); RETURN NEW; END $$",
        "CREATE TRIGGER audited AFTER UPDATE ON payments FOR EACH ROW "
        "EXECUTE FUNCTION audit_update()",
    ],
    "sqlite": [
        "CREATE TABLE updates (id int)",
        "CREATE TRIGGER audited AFTER UPDATE ON payments "
        "BEGIN INSERT INTO updates VALUES (NEW.id); END",
    ],
    "mysql": [
        "CREATE TABLE updates (id int)",
        "CREATE TRIGGER audited AFTER UPDATE ON payments FOR EACH ROW "
        "INSERT INTO updates VALUES (NEW.id)",
    ],
}


def test_an_upsert_writes_only_the_rows_that_changed(engine):
    """Monday's two rows upserted again with one of them changed and one added: one
    row is updated (the update trigger fires once), one added, one left alone."""
    with engine.begin() as connection:
        for statement in UPDATE_AUDIT[engine.dialect.name]:
            connection.execute(text(statement))
    plan = LoadPlan("payments", "upsert", ("id",))
    load(engine, MONDAY, plan)
    changed = MONDAY.replace('"alan",-3.00', '"alan",-4.00') + '3,"grace",1,d,,\n'
    assert load(engine, changed, plan, "tuesday.csv").rows == 3
    with engine.connect() as connection:
        updated = connection.execute(text("SELECT id FROM updates")).scalars().all()
    assert updated == [2]
    assert [row[0] for row in rows_of(engine)] == [1, 2, 3]
    assert Decimal(rows_of(engine)[1][2]) == Decimal("-4.00")


def test_quoted_line_ends_load_past_the_first_mebibyte(engine):
    """Values holding line ends, quoted, in a file of more than 1 MiB (Arrow's read
    block on the generic path): every row loads, its value whole."""
    note = "first line\nsecond line, with a comma"
    lines = [f'{number},"s{number}",1.00,d,,"{note}"\n' for number in range(1, 20_001)]
    content = HEADER + "".join(lines)
    assert len(content) > 1 << 20
    outcome = load(engine, content, LoadPlan("payments"), "notes.csv")
    assert outcome.rows == 20_000
    with engine.connect() as connection:
        notes = connection.execute(text("SELECT DISTINCT note FROM payments")).all()
    assert notes == [(note,)]
