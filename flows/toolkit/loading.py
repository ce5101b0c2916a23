"""Loading a partner's CSV file into a table: all or nothing, exactly once, values exact.

One transaction holds the file's rows and its ledger row (toolkit.ledger), so a load
commits whole with its record, or leaves nothing. Modes (LoadPlan.mode):
- append: the rows are added;
- upsert: rows whose `key` is in the table replace theirs, the others are added
  (`INSERT ... ON CONFLICT (key) DO UPDATE`; the key needs a unique index);
- replace: the rows `replace_where` selects are deleted, then the file's added (the
  condition may read the file's rows as the table `flows_staged`: `term IN (SELECT
  term FROM flows_staged)`, and bound parameters: `day = :day`);
- truncate: every row is deleted, then the file's added.
PostgreSQL reads the file itself (COPY FROM STDIN): straight into the table to append,
else into a temporary table shaped like it, then one statement moves the rows. Other
databases (SQLite) get the same modes through batches of INSERTs: the slower path,
and SQLite keeps numbers as its own types (it has no exact decimal).

Columns are matched by the header's names. CSV conventions are PostgreSQL's and the
outbound files': an empty unquoted field is missing (NULL), `""` an empty string.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import psycopg2
from prefect import task
from sqlalchemy import exc, inspect, text
from sqlalchemy.engine import Connection, Engine

from toolkit import database
from toolkit import generic_load
from toolkit import ledger
from toolkit import retries
from toolkit.errors import one_line
from toolkit.logs import run_logger
from toolkit.streams import CHUNK_BYTES, CLOCK_CHECK_BYTES, Progress

MODES = ("append", "upsert", "replace", "truncate")
STAGED = generic_load.STAGED
# COPY's context names the line and the column of a bad value.
_COPY_CONTEXT = re.compile(r'line (\d+)(?:, column ([^:]+): "?(.*?)"?$)?', re.S)
# SQLSTATE classes of what a file's content causes: no retry mends them.
_CONTENT_SQLSTATE_CLASSES = ("21", "22", "23")


class BadFile(retries.PermanentFailure, ValueError):
    """The file cannot be loaded as it is: its header or one of its values."""


@dataclass(frozen=True)
class LoadPlan:
    """Where a file's rows go, and how."""

    table: str
    mode: str = "append"
    key: tuple[str, ...] = ()
    replace_where: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """ValueError naming the mistake, before any file is read."""
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: one of {', '.join(MODES)}")
        if (self.mode == "upsert") != bool(self.key):
            raise ValueError(
                "upsert needs a key (the columns of a unique index), "
                "and only upsert takes one"
            )
        if (self.mode == "replace") != bool(self.replace_where):
            raise ValueError(
                "replace needs replace_where (which rows the file "
                "replaces), and only replace takes one"
            )


@dataclass(frozen=True)
class Listing:
    """The file as the drop folder listed it: the ledger's source, path, size, time."""

    source: str
    path: str
    size: int
    modified: Any


@dataclass(frozen=True)
class LoadOutcome:
    """What a load did: rows and bytes, content hash, and whether it committed."""

    rows: int
    bytes: int
    sha256: str
    loaded: bool
    reason: str = ""


class _HashingReader(io.RawIOBase):
    """A raw reader that hashes and counts what passes, and tells `progress`."""

    def __init__(self, source: BinaryIO, progress: Progress | None):
        super().__init__()
        self._source = source
        self._progress = progress
        self._next_check = CLOCK_CHECK_BYTES
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.failure: Exception | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._source.read(len(buffer))
        except Exception as error:
            # COPY reports a reader's error as its own (QueryCanceled): kept here so
            # that the load raises what broke (a lost SFTP session, say) for retries.
            self.failure = error
            raise
        size = len(data)
        buffer[:size] = data
        self.sha256.update(data)
        self.bytes_read += size
        if self._progress is None:
            return size
        # Lines are rows but for values holding newlines: near enough to watch.
        self._progress.add_rows(data.count(b"\n"))
        if self.bytes_read >= self._next_check:
            self._next_check = self.bytes_read + CLOCK_CHECK_BYTES
            self._progress.moved(self.bytes_read)
        return size


class _HeaderThenRest:  # pylint: disable=too-few-public-methods
    """The header line already read, then the rest of the stream: what COPY reads."""

    def __init__(self, header: bytes, rest: BinaryIO):
        self._header = header
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        """The next bytes, the header first."""
        if self._header:
            data, self._header = self._header, b""
            return data
        return self._rest.read(size)


def _quote(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)


def _table_sql(connection: Connection, table: str) -> str:
    """`schema.table` or `table`, each part quoted."""
    return ".".join(_quote(connection, part) for part in table.split(".", 1))


def _filled_by_the_table(column: dict, primary_key: list[str]) -> bool:
    """Whether a column missing from a file is filled anyway: a default, an
    identity, or a single integer primary key that numbers itself."""
    numbering = primary_key == [column["name"]] and (
        column.get("autoincrement") in (True, "auto")
        and column["type"].python_type is int
    )
    return bool(column.get("default") or column.get("identity") or numbering)


def table_columns(connection: Connection, table: str) -> list[dict]:
    """The table's columns as SQLAlchemy's inspector describes them."""
    schema, _, name = table.rpartition(".")
    inspector = inspect(connection)
    if not inspector.has_table(name, schema=schema or None):
        raise BadFile(f"no table {table} in the target database: create it first")
    columns = inspector.get_columns(name, schema=schema or None)
    key = inspector.get_pk_constraint(name, schema=schema or None)
    for column in columns:
        column["filled"] = _filled_by_the_table(column, key["constrained_columns"])
    return columns


def match_columns(header: list[str], columns: list[dict], file_name: str) -> list:
    """The table's columns in the file's order; BadFile naming what is missing or
    unknown. A name matches exactly, else ignoring case."""
    by_name = {column["name"]: column for column in columns}
    by_lower = {column["name"].lower(): column for column in columns}
    matched, unknown = [], []
    for name in header:
        column = by_name.get(name) or by_lower.get(name.lower())
        (unknown if column is None else matched).append(column or name)
    names = [column["name"] for column in matched]
    twice = sorted({name for name in names if names.count(name) > 1})
    missing = [c["name"] for c in columns if c["name"] not in names and not c["filled"]]
    if unknown or missing or twice:
        problems = [
            f"{label} {', '.join(found)}"
            for label, found in (
                ("missing:", missing),
                ("unknown:", unknown),
                ("twice:", twice),
            )
            if found
        ]
        raise BadFile(
            f"{file_name}: the header does not match the table's columns "
            f"({'; '.join(problems)}): nothing was loaded"
        )
    return matched


def _bad_value(error: psycopg2.Error, file_name: str) -> BadFile:
    """The database's refusal of a value as one line: line, column, value."""
    primary = error.diag.message_primary or str(error).splitlines()[0]
    found = _COPY_CONTEXT.search(error.diag.context or "")
    if found is None:
        return BadFile(f"{file_name}: {primary}: nothing was loaded")
    line, column, value = found.groups()
    where = f"line {line}" + (f", column {column}, value {value!r}" if column else "")
    return BadFile(f"{file_name}: {where}: {primary}: nothing was loaded")


def _copy_into_postgres(connection, plan, columns, stream) -> int:
    """COPY the file into the table (append) or the staging table; rows copied."""
    into = _table_sql(connection, plan.table)
    with connection.connection.driver_connection.cursor() as cursor:
        if plan.mode != "append":
            cursor.execute(
                f"CREATE TEMPORARY TABLE {STAGED} (LIKE {into} INCLUDING DEFAULTS)"
                " ON COMMIT DROP"
            )
            into = STAGED
        names = ", ".join(_quote(connection, column["name"]) for column in columns)
        cursor.copy_expert(
            f"COPY {into} ({names}) FROM STDIN WITH (FORMAT csv, HEADER true)",
            stream,
            CHUNK_BYTES,
        )
        return cursor.rowcount


def move_staged_rows(connection: Connection, plan: LoadPlan, columns) -> None:
    """The mode's statements, from the staging table into the table."""
    target = _table_sql(connection, plan.table)
    names = [_quote(connection, column["name"]) for column in columns]
    statements = [generic_load.insert_staged(target, names)]
    if plan.mode == "truncate":
        statements.insert(0, f"DELETE FROM {target}")
    elif plan.mode == "replace":
        statements.insert(0, f"DELETE FROM {target} WHERE {plan.replace_where}")
    elif plan.mode == "upsert":
        statements = generic_load.upsert_statements(connection, target, names, plan)
    for statement in statements:
        connection.execute(text(statement), plan.parameters)


def _load_rows(connection, plan, header_line, rest, file_name) -> int:
    """The file's rows into the table or the staging table, then the mode's step."""
    header = next(csv.reader([header_line.decode("utf-8-sig")]), [])
    columns = match_columns(header, table_columns(connection, plan.table), file_name)
    if connection.dialect.name == "postgresql":
        stream = _HeaderThenRest(header_line, rest)
        rows = _copy_into_postgres(connection, plan, columns, stream)
    else:
        rows = generic_load.insert_in_batches(
            connection, plan.table, plan.mode, columns, rest, file_name=file_name
        )
    if plan.mode != "append":
        move_staged_rows(connection, plan, columns)
        if connection.dialect.name != "postgresql":  # PostgreSQL's drops at commit
            generic_load.drop_staging(connection)
    return rows


class _LoadedBefore(Exception):
    """Raised inside the transaction to roll back a load the ledger already holds."""


def load_stream(  # pylint: disable=too-many-arguments
    engine: Engine,
    stream: BinaryIO,
    plan: LoadPlan,
    listing: Listing,
    *,
    flow_run_id: str | None = None,
    progress: Progress | None = None,
) -> LoadOutcome:
    """Load one CSV stream with its ledger row, in one transaction; its outcome.

    Content the ledger holds for this table already is rolled back, not loaded again.
    """
    plan.check()
    ledger.create_ledger(engine)
    if progress is not None:
        progress.start_counting_rows()
        progress.add_rows(-1)  # the header's line
    hashing = _HashingReader(stream, progress)
    rest = io.BufferedReader(hashing, CHUNK_BYTES)
    header_line = rest.readline()
    try:
        with engine.begin() as connection:
            rows = _load_rows(connection, plan, header_line, rest, listing.path)
            sha256 = _hash_the_rest(rest, hashing)
            entry = ledger.LedgerEntry(
                listing.source, listing.path, listing.size, listing.modified,
                sha256, rows, plan.table, plan.mode, flow_run_id,
            )  # fmt: skip
            if not ledger.record(connection, entry):
                raise _LoadedBefore()
    except _LoadedBefore:
        return _skipped(hashing.bytes_read, sha256)
    except (psycopg2.Error, exc.IntegrityError, generic_load.ContentError) as error:
        if hashing.failure is not None:
            raise hashing.failure from error
        bad = _content_error(error, listing.path)
        if bad is error:
            raise  # not the content's doing (a lost connection): retries decide
        # The same rows again break a unique key before the ledger is asked.
        sha256 = _hash_the_rest(rest, hashing)
        with engine.connect() as connection:
            if ledger.loaded_before(connection, plan.table, sha256) is not None:
                return _skipped(hashing.bytes_read, sha256)
        raise bad from error
    return LoadOutcome(rows, hashing.bytes_read, sha256, True)


def _hash_the_rest(rest: io.BufferedReader, hashing: _HashingReader) -> str:
    """The file's sha256, once what the parser left (blank lines) is read too."""
    while rest.read(CHUNK_BYTES):
        pass
    return hashing.sha256.hexdigest()


def _skipped(size: int, sha256: str) -> LoadOutcome:
    return LoadOutcome(
        0, size, sha256, False, "already loaded (the same content is in the ledger)"
    )


def _content_error(error: Exception, file_name: str) -> Exception:
    """BadFile for what the file's content caused; else the error as it is."""
    if isinstance(error, generic_load.ContentError):
        return BadFile(str(error))
    if isinstance(error, exc.IntegrityError):
        return BadFile(f"{file_name}: {one_line(error.orig)}: nothing was loaded")
    if (error.pgcode or "")[:2] in _CONTENT_SQLSTATE_CLASSES:
        return _bad_value(error, file_name)
    return error


def content_loaded_before(engine: Engine, table: str, listing: Listing, opener):
    """Whether the ledger holds this very file (source, path, size and content):
    a run was killed between its commit and its move. Read (to hash it) only when
    its source, path and size are in the ledger."""
    ledger.create_ledger(engine)
    probe = ledger.LedgerEntry(
        listing.source, listing.path, listing.size, None, "", 0, table, "", None
    )
    with engine.connect() as connection:
        hashes = ledger.hashes_listed_before(connection, table, probe)
    if not hashes:
        return False
    sha256 = hashlib.sha256()
    with opener() as reader:
        while data := reader.read(CHUNK_BYTES):
            sha256.update(data)
    return sha256.hexdigest() in hashes


@task(**retries.TRANSIENT_RETRIES)
def run_sql(
    target: database.DatabaseConnection | Engine,
    statement: str,
    parameters: dict[str, Any] | None = None,
) -> int:
    """Run one statement (text, or `sql/<file>.sql` from flows/sql/) with bound
    parameters, in its own transaction, before or after a load; rows it touched."""
    with database.engine_of(target) as engine, engine.begin() as connection:
        result = connection.execute(database.statement_of(statement), parameters or {})
        touched = result.rowcount
    rows = f"{touched:,} rows" if touched >= 0 else "done"  # DDL counts no rows
    run_logger().info("ran %s: %s", statement.splitlines()[0][:80], rows)
    return touched
