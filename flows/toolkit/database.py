"""SQL sources through SQLAlchemy: whole DataFrames, bounded chunks, or raw CSV bytes.

Queries are text with bound parameters (`:name`), inline or read from `flows/sql/`.
Values are never formatted into the SQL: a hostile value stays a value.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional

import pandas as pd
from prefect import task
from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from psycopg2.extensions import quote_ident
from sqlalchemy import create_engine, text
from sqlalchemy.dialects.postgresql import psycopg2
from sqlalchemy.engine import Engine, make_url

from toolkit.prefect_majors import Field
from toolkit import arrow_csv
from toolkit import retries
from toolkit.logs import run_logger
from toolkit.streams import CHUNK_BYTES, CountingWriter, Progress

# The flows' own SQL files: flows/sql/, beside the flow files, not in the toolkit.
SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
DEFAULT_CHUNK_ROWS = 50_000


class DatabaseConnection(Block):
    """Where a flow reads its data: a SQLAlchemy URL and, apart, its password."""

    _block_type_name = "Flows Database Connection"
    _description = "A SQLAlchemy URL without its password, and a Secret holding it."

    url: str = Field(
        ...,
        description="SQLAlchemy URL without the password, e.g. "
        "postgresql+psycopg2://reader@db.example.edu:5432/warehouse",
    )
    password: Optional[Secret] = Field(
        None, description="Secret block holding the password, if one is needed."
    )

    def create_engine(self) -> Engine:
        """An engine for this connection; the password never appears in its URL's repr."""
        url = make_url(self.url)
        if self.password is not None:
            # pylint: disable-next=no-member  # a Secret block once loaded
            url = url.set(password=self.password.get())
        return create_engine(url, pool_pre_ping=True)


def sqlite_database(path: Path, load: Callable[[Engine], None]) -> DatabaseConnection:
    """A SQLite database at `path`, made by `load(engine)` unless it is there.

    It is built under a temporary name and renamed, so a run never sees half of it.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        partial.unlink(missing_ok=True)
        engine = create_engine(f"sqlite:///{partial}")
        try:
            load(engine)
            engine.dispose()
            os.replace(partial, path)
        finally:
            engine.dispose()
            partial.unlink(missing_ok=True)
    return DatabaseConnection(url=f"sqlite:///{path}")


def read_sql_file(name: str) -> str:
    """The text of `flows/sql/<name>` (`.sql` may be left out)."""
    file_name = name if name.endswith(".sql") else f"{name}.sql"
    path = (SQL_DIR / file_name).resolve()
    if path.parent != SQL_DIR or not path.is_file():
        raise FileNotFoundError(f"no SQL file {file_name!r} in {SQL_DIR}")
    return path.read_text(encoding="utf-8")


def statement_of(query: str):
    """A query given as `sql/<file>.sql` is read from flows/sql/, else used as is."""
    if query.startswith("sql/") and query.endswith(".sql"):
        query = read_sql_file(query.removeprefix("sql/"))
    return text(query)


@contextlib.contextmanager
def engine_of(source: DatabaseConnection | Engine) -> Iterator[Engine]:
    """The caller's engine as it is, or one made from the block for this call only:
    disposed after it, so that no task leaves connections open on the server."""
    if isinstance(source, Engine):
        yield source
        return
    engine = source.create_engine()
    try:
        yield engine
    finally:
        engine.dispose()


@task(**retries.TRANSIENT_RETRIES)
def query_dataframe(
    source: DatabaseConnection | Engine,
    query: str,
    parameters: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The whole result of `query` as one DataFrame: for results that fit in memory.

    numeric arrives exact, as in `iterate_query_frames`; cast it to float in the query
    or the flow where floats are wanted.
    """
    with engine_of(source) as engine, engine.connect() as connection:
        frame = pd.read_sql(
            statement_of(query), connection, params=parameters or {}, coerce_float=False
        )
    frame = arrow_csv.normalize_driver_values(frame)
    run_logger().info("read %d rows from %s", len(frame), engine.url)
    return frame


def iterate_query_frames(
    source: DatabaseConnection | Engine,
    query: str,
    parameters: dict[str, Any] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """The result of `query` as DataFrames of at most `chunk_rows` rows.

    A server-side cursor (stream_results) keeps memory bounded by one chunk, however
    large the result; databases without one (SQLite) still return chunks. numeric
    arrives exact, as `Decimal` values (`arrow_csv.exact_numbers`), never as float.
    """
    with engine_of(source) as engine:
        if engine.dialect.name == "postgresql":
            yield from _postgres_frames(engine, query, parameters, chunk_rows)
            return
        with engine.connect() as connection:
            streaming = connection.execution_options(
                stream_results=True, max_row_buffer=chunk_rows
            )
            for frame in pd.read_sql(
                statement_of(query),
                streaming,
                params=parameters or {},
                chunksize=chunk_rows,
                coerce_float=False,
            ):
                yield arrow_csv.normalize_driver_values(frame)


def copy_query_as_csv(
    source: DatabaseConnection | Engine,
    query: str,
    destination: BinaryIO,
    parameters: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> int:
    """Write the result of `query` as CSV (with a header) to `destination`; rows written.

    No DataFrame is built: PostgreSQL's own COPY ... TO STDOUT writes the CSV (its
    times in the pandas paths' format), other databases stream rows through a
    server-side cursor into the csv module. Only the latter can tell `progress` its
    rows as they go; COPY's are known at the end.
    """
    # Writes of one row each would cost a sink call per row: buffer them in C.
    buffered = io.BufferedWriter(CountingWriter(destination), CHUNK_BYTES)
    with engine_of(source) as engine, engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            rows = _postgres_copy(connection, query, parameters, buffered)
        else:
            rows = _stream_rows(connection, query, parameters, buffered, progress)
    buffered.flush()
    return rows


def _bound_postgres_query(cursor, query: str, parameters) -> str:
    """The query with its parameters as quoted literals, for COPY (which binds none).

    The driver quotes each value exactly as it does for an ordinary bound query;
    SQLAlchemy first turns `:name` markers into the driver's `%(name)s`.
    """
    statement = str(statement_of(query).compile(dialect=psycopg2.dialect()))
    return cursor.mogrify(statement.strip().rstrip(";"), parameters or {}).decode()


def _copy_statement(bound_query: str) -> str:
    return f"COPY ({bound_query}) TO STDOUT WITH (FORMAT csv, HEADER)"


def _describe(cursor, bound_query: str):
    """The result's columns (names, type OIDs) without running the query."""
    cursor.execute(f"SELECT * FROM ({bound_query}) AS result LIMIT 0")
    return cursor.description


def _postgres_time_text(value: str, pattern: str) -> str:
    """SQL for a timestamp as `pattern` says; infinity and BC as PostgreSQL has them."""
    return (
        f"CASE WHEN isfinite({value}) AND {value} >= '0001-01-01' "
        f"THEN to_char({value}, '{pattern}') ELSE {value}::text END"
    )


# PostgreSQL writes a time without its fraction where it is zero (08:00:00 beside
# 08:00:00.5); the as-is path has it write these types as the pandas paths do.
_POSTGRES_TEXT = {
    1083: lambda column: f"to_char({column}::interval, 'HH24:MI:SS.US')",
    1114: lambda column: _postgres_time_text(column, "YYYY-MM-DD HH24:MI:SS.US"),
    1184: lambda column: _postgres_time_text(
        f"({column} AT TIME ZONE 'UTC')", 'YYYY-MM-DD HH24:MI:SS.US"Z"'
    ),
}


def _as_written(cursor, bound_query: str) -> str:
    """The query with its times formatted for the file, or itself if it has none."""
    description = _describe(cursor, bound_query)
    if not any(column.type_code in _POSTGRES_TEXT for column in description):
        return bound_query
    # Positional names: a result may have two columns of one name (a.id, b.id).
    positional = [f"column_{index}" for index in range(len(description))]
    selected = []
    for name, column in zip(positional, description):
        text = _POSTGRES_TEXT.get(column.type_code, lambda same: same)(name)
        selected.append(f"{text} AS {quote_ident(column.name, cursor)}")
    return (
        f"SELECT {', '.join(selected)} "
        f"FROM ({bound_query}) AS result ({', '.join(positional)})"
    )


def _postgres_copy(connection, query, parameters, destination) -> int:
    with connection.connection.driver_connection.cursor() as cursor:
        bound = _bound_postgres_query(cursor, query, parameters)
        cursor.copy_expert(_copy_statement(_as_written(cursor, bound)), destination)
        return cursor.rowcount


def _postgres_frames(engine, query, parameters, chunk_rows) -> Iterator[pd.DataFrame]:
    """Frames from COPY's CSV, parsed by Arrow while the database still sends.

    COPY writes into a pipe from a thread (psycopg2 waits on the network without the
    GIL); Arrow's reader parses from the other end in C++. Memory: one chunk, plus
    the pipe.
    """
    with engine.connect() as connection:
        cursor = connection.connection.driver_connection.cursor()
        bound = _bound_postgres_query(cursor, query, parameters)
        description = _describe(cursor, bound)
        read_end, write_end = os.pipe()
        failures = []

        def produce():
            try:
                with os.fdopen(write_end, "wb", CHUNK_BYTES) as pipe:
                    cursor.copy_expert(_copy_statement(bound), pipe)
            except Exception as error:  # pylint: disable=broad-exception-caught
                failures.append(error)  # re-raised below, in the caller's thread

        producer = threading.Thread(target=produce, name="postgres-copy", daemon=True)
        producer.start()
        try:
            with os.fdopen(read_end, "rb") as pipe:
                yield from arrow_csv.read_postgres_csv(pipe, description, chunk_rows)
        except Exception as error:
            producer.join()
            if failures:  # the database's error is the one that explains this
                raise failures[0] from error
            raise
        finally:
            producer.join()
            cursor.close()
        if failures:
            raise failures[0]


def csv_field(value: Any) -> str:  # pylint: disable=too-many-return-statements
    """One value as the outbound files write it: NULL an empty field, an empty
    string `""`, numbers exact, times to the microsecond (UTC with Z when zoned),
    text quoted where CSV needs it."""
    if value is None:
        return ""
    if isinstance(value, str):
        if value and not any(c in value for c in ',"\n\r') and value.strip() == value:
            return value
        return '"' + value.replace('"', '""') + '"'
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            moment = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            return moment.isoformat(sep=" ", timespec="microseconds") + "Z"
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, bytes):
        return csv_field(value.hex())
    return str(value)


def _stream_rows(connection, query, parameters, destination, progress) -> int:
    wrapper = io.TextIOWrapper(
        destination, encoding="utf-8", newline="", write_through=False
    )
    result = connection.execution_options(stream_results=True).execute(
        statement_of(query), parameters or {}
    )
    wrapper.write(",".join(csv_field(name) for name in result.keys()) + "\n")
    rows = 0
    if progress is not None:
        progress.start_counting_rows()
    for partition in result.partitions(DEFAULT_CHUNK_ROWS):
        # Not the csv module: it writes an empty string as it writes NULL.
        wrapper.write(
            "".join(",".join(map(csv_field, row)) + "\n" for row in partition)
        )
        rows += len(partition)
        if progress is not None:
            progress.add_rows(len(partition))
    wrapper.flush()
    wrapper.detach()
    return rows
