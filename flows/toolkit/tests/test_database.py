"""The SQL source against a real PostgreSQL and SQLite: bound parameters, streaming."""

import io

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from prefect.blocks.system import Secret
from sqlalchemy import create_engine, inspect, text

from conftest import FIXTURE_FLOWS_DIR
from fixture_data import fixture_database

from toolkit import database
from toolkit.database import DatabaseConnection

ROWS = [(1, "Ada", 1815), (2, 'Grace, "Amazing"', 1906), (3, "Alan", 1912)]
HOSTILE = "'; DROP TABLE people; --"


def fill_people(engine) -> None:
    """A small table `people` with a comma and quotes in one value."""
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS people"))
        connection.execute(
            text("CREATE TABLE people (id INTEGER, name TEXT, born INTEGER)")
        )
        connection.execute(
            text("INSERT INTO people VALUES (:id, :name, :born)"),
            [{"id": i, "name": n, "born": b} for i, n, b in ROWS],
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """The same table in SQLite and in a real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'people.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").url()
    engine = create_engine(url)
    fill_people(engine)
    yield engine
    engine.dispose()


def test_query_with_bound_parameters(engine):
    """`:name` parameters are bound, and the result is a DataFrame."""
    frame = database.query_dataframe.fn(
        engine,
        "SELECT id, name FROM people WHERE born > :year ORDER BY id",
        {"year": 1900},
    )
    expected = pd.DataFrame({"id": [2, 3], "name": ['Grace, "Amazing"', "Alan"]})
    assert_frame_equal(frame, expected)


def test_hostile_parameter_is_only_a_value(engine):
    """A value that is SQL matches nothing and drops nothing, in every path."""
    query = "SELECT id FROM people WHERE name = :name"
    assert database.query_dataframe.fn(engine, query, {"name": HOSTILE}).empty
    assert [
        len(f) for f in database.iterate_query_frames(engine, query, {"name": HOSTILE})
    ] == [0]
    csv = io.BytesIO()
    assert database.copy_query_as_csv(engine, query, csv, {"name": HOSTILE}) == 0
    assert csv.getvalue().decode().splitlines() == ["id"]
    assert "people" in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM people")).scalar() == 3


def test_chunks_stay_within_their_size(engine):
    """A stream of chunks of at most chunk_rows rows, together the whole result."""
    frames = list(
        database.iterate_query_frames(
            engine, "SELECT * FROM people ORDER BY id", chunk_rows=2
        )
    )
    assert [len(frame) for frame in frames] == [2, 1]
    assert pd.concat(frames)["id"].tolist() == [1, 2, 3]


def test_copy_writes_exact_csv(engine):
    """The fast path writes a header and quoted values, the same on both databases."""
    destination = io.BytesIO()
    rows = database.copy_query_as_csv(
        engine,
        "SELECT id, name, born FROM people WHERE id >= :first ORDER BY id",
        destination,
        {"first": 1},
    )
    assert rows == 3
    assert destination.getvalue().decode() == (
        'id,name,born\n1,Ada,1815\n2,"Grace, ""Amazing""",1906\n3,Alan,1912\n'
    )


def test_query_from_a_sql_file(tmp_path, monkeypatch):
    """`sql/<file>.sql` reads flows/sql/; a name outside that folder is refused."""
    monkeypatch.setattr(database, "SQL_DIR", FIXTURE_FLOWS_DIR / "sql")
    source = fixture_database(tmp_path)
    frame = database.query_dataframe.fn(
        source, "sql/orders_of_day.sql", {"day": "2024-08-01"}
    )
    assert len(frame) == 20 and list(frame.columns)[0] == "order_id"
    with pytest.raises(FileNotFoundError):
        database.read_sql_file("../fixture_flow.py")


def test_connection_block_keeps_the_password_apart(postgres):
    """The URL holds no password; the Secret supplies it; the engine's repr hides it."""
    connection = DatabaseConnection(
        url=postgres.url(password=False), password=Secret(value=postgres.password)
    )
    engine = connection.create_engine()
    with engine.connect() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
    assert postgres.password not in repr(engine.url)
    assert postgres.password not in str(connection)


def test_stopping_early_releases_the_database(postgres):
    """A reader that stops after one chunk of a large COPY leaves nothing stuck."""
    engine = create_engine(postgres.url())
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS big"))
        connection.execute(
            text(
                "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS t"
                " FROM generate_series(1, 200000) AS g"
            )
        )
    frames = database.iterate_query_frames(engine, "SELECT * FROM big", chunk_rows=1000)
    assert len(next(frames)) == 1000
    frames.close()  # the producer thread must end, not wait on a full pipe
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM big")).scalar() == 200000
    engine.dispose()


def test_reading_through_a_block_leaves_no_connection_open(postgres):
    """Each read through a connection block makes an engine for itself and closes its
    connections when done: a flow of many tasks holds none of the server's slots."""
    application = "flows-connection-count"  # how the server tells them apart
    connection = DatabaseConnection(
        url=f"{postgres.url(password=False)}?application_name={application}",
        password=Secret(value=postgres.password),
    )
    database.query_dataframe.fn(connection, "SELECT 1 AS one")
    list(database.iterate_query_frames(connection, "SELECT 1 AS one"))
    database.copy_query_as_csv(connection, "SELECT 1 AS one", io.BytesIO())

    observer = create_engine(postgres.url())
    with observer.connect() as session:
        still_open = session.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
            {"a": application},
        ).scalar()
    observer.dispose()
    assert still_open == 0
