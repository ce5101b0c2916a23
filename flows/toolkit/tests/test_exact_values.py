"""Exact values: every delivery path writes the same text, one format per column.

numeric(38, 10) values of 30 significant digits, a numeric without a scale, and times
with and without fractions fall on both sides of chunk boundaries (two rows a chunk).
"""

from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import create_engine, text
from conftest import fresh_database

from toolkit import database
from toolkit import delivery

CREATE_VALUES = """
CREATE TABLE exact_values (
    id integer, amount numeric(38, 10), ratio numeric, happened timestamp,
    zoned timestamptz
)
"""
# Chunks of two: the first has no fraction in its times, the second only fractions;
# ratio's values share one number of decimals in the first chunk, not in the second.
VALUES = [
    (1, "12345678901234567890.1234567890", "0.5", "2024-01-01 08:00:00", "+00"),
    (2, "-98765432109876543210.9876543210", "2.5", "2024-01-01 08:00:01", "+02"),
    (3, "0", "0.125", "2024-01-01 08:00:02.5", "+00"),
    (4, "0.0000000001", "100", "2024-01-01 08:00:03.000001", None),
    (5, None, None, None, None),
    (6, "1.0000000001", "-7.75", "2024-07-31 23:59:59.999999", "+00"),
]
EXPECTED_CSV = (
    "id,amount,ratio,happened,zoned\n"
    "1,12345678901234567890.1234567890,0.5,"
    "2024-01-01 08:00:00.000000,2024-01-01 08:00:00.000000Z\n"
    "2,-98765432109876543210.9876543210,2.5,"
    "2024-01-01 08:00:01.000000,2024-01-01 06:00:01.000000Z\n"
    "3,0.0000000000,0.125,2024-01-01 08:00:02.500000,2024-01-01 08:00:02.500000Z\n"
    "4,0.0000000001,100,2024-01-01 08:00:03.000001,\n"
    "5,,,,\n"
    "6,1.0000000001,-7.75,2024-07-31 23:59:59.999999,2024-07-31 23:59:59.999999Z\n"
)
QUERY = "SELECT * FROM exact_values ORDER BY id"
CHUNK_ROWS = 2


def deliver_by_path(path: str, source, sink, transform=None) -> str:
    """Deliver QUERY one way into `sink`'s folder; the file's text."""
    transform = transform or (lambda frame: frame)
    if path == "frame":
        frame = transform(database.query_dataframe.fn(source, QUERY))
        delivery.deliver_frame.fn(sink, frame, "values.csv")
    elif path == "chunks":
        delivery.deliver_query_in_chunks.fn(
            source,
            QUERY,
            sink,
            "values.csv",
            transform=transform,
            chunk_rows=CHUNK_ROWS,
        )
    else:
        delivery.deliver_query_as_is.fn(source, QUERY, sink, "values.csv")
    with open(sink.describe("values.csv"), encoding="utf-8", newline="") as file:
        return file.read()


@pytest.fixture(scope="module")
def values_database(postgres):
    """VALUES in a PostgreSQL database of this module's own."""
    engine = fresh_database(postgres, "exact_values_test")
    with engine.begin() as connection:
        connection.execute(text(CREATE_VALUES))
        connection.execute(
            text(
                "INSERT INTO exact_values VALUES (:i, :a, :r, :h, (:h || :z)::timestamptz)"
            ),
            [dict(zip("iarhz", row)) for row in VALUES],
        )
    yield engine
    engine.dispose()


@pytest.mark.parametrize("path", ["frame", "chunks", "as_is"])
def test_postgres_paths_write_the_same_exact_text(values_database, path, tmp_path):
    """Each path: every digit of numeric, six fraction digits on every time."""
    sink = delivery.LocalFolderSink(str(tmp_path))
    assert deliver_by_path(path, values_database, sink) == EXPECTED_CSV


@pytest.mark.parametrize("path", ["frame", "chunks", "as_is"])
def test_times_with_zone_are_utc_whatever_the_servers_zone(
    values_database, path, tmp_path
):
    """A session in a zone with summer time (-07:00 in winter, -06:00 in summer)
    changes nothing in the file."""
    in_denver = create_engine(
        values_database.url, connect_args={"options": "-c TimeZone=America/Denver"}
    )
    sink = delivery.LocalFolderSink(str(tmp_path))
    try:
        assert deliver_by_path(path, in_denver, sink) == EXPECTED_CSV
    finally:
        in_denver.dispose()


def arrow_decimal_scale(column: pd.Series) -> int | None:
    """The scale of a column of Arrow decimals, None for any other column."""
    dtype = column.dtype
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_decimal(dtype.pyarrow_dtype):
        return dtype.pyarrow_dtype.scale
    return None


def test_numeric_reaches_pandas_as_decimals(values_database):
    """Never float: a scale shared by a chunk's values stays in an Arrow decimal,
    values of different scales are Decimal objects with their own digits."""
    first, second, _ = database.iterate_query_frames(
        values_database, QUERY, chunk_rows=CHUNK_ROWS
    )
    assert arrow_decimal_scale(first["amount"]) == 10
    assert first["amount"].iloc[1] == Decimal("-98765432109876543210.9876543210")
    assert (arrow_decimal_scale(first["ratio"]), second["ratio"].dtype) == (1, object)
    assert [str(number) for number in second["ratio"]] == ["0.125", "100"]
    whole = database.query_dataframe.fn(values_database, QUERY)
    assert arrow_decimal_scale(whole["amount"]) == 10
    assert (whole["amount"] * 100).iloc[0] == Decimal(
        "1234567890123456789012.345678900"
    )


def type_values(frame: pd.DataFrame) -> pd.DataFrame:
    """SQLite keeps exact numbers and times as text: a flow gives them their types."""
    return frame.assign(
        amount=frame["amount"].map(Decimal, na_action="ignore"),
        ratio=frame["ratio"].map(Decimal, na_action="ignore"),
        happened=pd.to_datetime(frame["happened"]),
        zoned=pd.to_datetime(frame["zoned"], utc=True),
    )


@pytest.fixture
def sqlite_values(tmp_path):
    """VALUES in SQLite, which has neither type: numbers as their text, times as
    SQLAlchemy's DateTime stores them (six fraction digits)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'values.sqlite'}")
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE exact_values (id INTEGER, amount TEXT, ratio TEXT,"
                " happened TEXT, zoned TEXT)"
            )
        )
        for line in EXPECTED_CSV.splitlines()[1:]:
            row = [value or None for value in line.split(",")]
            connection.execute(
                text("INSERT INTO exact_values VALUES (:i, :a, :r, :h, :z)"),
                dict(zip("iarhz", row)),
            )
    yield engine
    engine.dispose()


@pytest.mark.parametrize("path", ["frame", "chunks", "as_is"])
def test_sqlite_paths_write_the_same_exact_text(sqlite_values, path, tmp_path):
    """Typed by the flow (Decimal, datetime64[ns]), SQLite's values come out as
    PostgreSQL's do; the as-is path writes the text SQLite holds."""
    sink = delivery.LocalFolderSink(str(tmp_path))
    written = deliver_by_path(path, sqlite_values, sink, transform=type_values)
    assert written == EXPECTED_CSV
