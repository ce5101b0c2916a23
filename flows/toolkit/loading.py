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
from typing import Any, BinaryIO, Callable

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
# The header is read before anything else: a file with no line end in its first MiB
# (CR-only line ends, a binary file, one endless line) is refused, not read whole.
MAX_HEADER_BYTES = 1 << 20
# A line holding only `\.` ends COPY FROM STDIN on PostgreSQL 17 and older, CSV too:
# the rows after it would be dropped without an error.
_END_OF_COPY_LINE = re.compile(rb"\n\\\.\r?(?=\n|$)")


class BadFile(retries.PermanentFailure, ValueError):
    """The file cannot be loaded as it is: its header or one of its values."""


class FileChanged(retries.PermanentFailure, RuntimeError):
    """The file is not what was listed: its size or time changed while it was read.
    Nothing is committed, and the next run takes it again once it has settled."""


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


class _HashingReader(io.RawIOBase):  # pylint: disable=too-many-instance-attributes
    """A raw reader that hashes and counts what passes, and tells `progress`."""

    def __init__(self, source: BinaryIO, progress: Progress | None):
        super().__init__()
        self._source = source
        self._progress = progress
        self._next_check = CLOCK_CHECK_BYTES
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.failure: Exception | None = None
        self.end_of_copy_line = False
        self._tail = b"\n"  # the line before the first byte has ended

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
        self._scan_for_end_of_copy(data)
        if self._progress is None:
            return size
        # Lines are rows but for values holding newlines: near enough to watch.
        self._progress.add_rows(data.count(b"\n"))
        if self.bytes_read >= self._next_check:
            self._next_check = self.bytes_read + CLOCK_CHECK_BYTES
            self._progress.moved(self.bytes_read)
        return size

    def _scan_for_end_of_copy(self, data: bytes) -> None:
        """Note a line of only `\\.`, across the boundaries of what is read."""
        if self.end_of_copy_line:
            return
        window = self._tail + data
        found = _END_OF_COPY_LINE.search(window)
        # A match at the window's very end may be a longer line still arriving.
        if found and (found.end() < len(window) or not data):
            self.end_of_copy_line = True
        self._tail = window[-4:]

    def finish(self) -> None:
        """The end of the file: a last line of only `\\.` counts too."""
        self._scan_for_end_of_copy(b"")


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
    # SQLite reports no autoincrement: its single INTEGER PRIMARY KEY numbers itself.
    numbering = primary_key == [column["name"]] and (
        column.get("autoincrement", "auto") in (True, "auto")
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
            f"{label} {_listing(found)}"
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


def _listing(names: list[str], shown: int = 10) -> str:
    """Names for a one-line message: the first `shown`, then how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more:,} more" if more > 0 else "")


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
        names = ", ".join(_quote(connection, column["name"]) for column in columns)
        if plan.mode != "append":
            # The file's columns only, typed as the table's and with none of its
            # constraints: a column the table fills itself (an identity, a default)
            # is left to the table when the rows move in.
            cursor.execute(
                f"CREATE TEMPORARY TABLE {STAGED} ON COMMIT DROP AS "
                f"SELECT {names} FROM {into} WITH NO DATA"
            )
            into = STAGED
        cursor.copy_expert(
            f"COPY {into} ({names}) FROM STDIN "
            "WITH (FORMAT csv, HEADER true, ENCODING 'UTF8')",
            stream,
            CHUNK_BYTES,
        )
        return cursor.rowcount


def _refuse_repeated_keys(connection: Connection, plan: LoadPlan, file_name: str):
    """BadFile when two rows of an upsert's file share a key: which one should win
    is the partner's to say (PostgreSQL refuses such a file, SQLite would keep the
    last row; neither quietly)."""
    key = ", ".join(_quote(connection, name) for name in plan.key)
    repeated = connection.execute(
        text(
            f"SELECT {key}, COUNT(*) FROM {STAGED} GROUP BY {key} "
            "HAVING COUNT(*) > 1 LIMIT 1"
        )
    ).first()
    if repeated is not None:
        *values, count = repeated
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(plan.key, values))
        raise generic_load.ContentError(
            f"{file_name}: the key ({shown}) is on {count} rows of the file: an "
            "upsert takes one row per key; nothing was loaded"
        )


def move_staged_rows(
    connection: Connection, plan: LoadPlan, columns, file_name: str
) -> None:
    """The mode's statements, from the staging table into the table."""
    target = _table_sql(connection, plan.table)
    names = [_quote(connection, column["name"]) for column in columns]
    if plan.mode == "upsert":
        _refuse_repeated_keys(connection, plan, file_name)
    statements = [generic_load.insert_staged(target, names)]
    if plan.mode == "truncate":
        statements.insert(0, f"DELETE FROM {target}")
    elif plan.mode == "replace":
        statements.insert(0, f"DELETE FROM {target} WHERE {plan.replace_where}")
    elif plan.mode == "upsert":
        statements = generic_load.upsert_statements(connection, target, names, plan)
    for statement in statements:
        connection.execute(text(statement), plan.parameters)


def read_header(header_line: bytes, file_name: str) -> list[str]:
    """The header's column names; BadFile for a file with no header line to read."""
    if not header_line:
        raise BadFile(f"{file_name}: the file is empty: nothing was loaded")
    if len(header_line) > MAX_HEADER_BYTES or not header_line.endswith(b"\n"):
        if b"\r" in header_line:
            reason = "its lines end in CR alone: save it with LF or CRLF line ends"
        elif len(header_line) > MAX_HEADER_BYTES:
            reason = f"no line end in its first {MAX_HEADER_BYTES:,} bytes"
        else:
            reason = "its only line has no line end: a header and no rows"
        raise BadFile(f"{file_name}: line 1: {reason}: nothing was loaded")
    if b"\r" in header_line.rstrip(b"\r\n"):
        raise BadFile(
            f"{file_name}: line 1: its lines end in CR alone: save it with LF or "
            "CRLF line ends: nothing was loaded"
        )
    try:
        decoded = header_line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadFile(
            f"{file_name}: line 1: not UTF-8 (byte 0x{header_line[error.start]:02x} "
            f"at byte {error.start + 1}): save the file as UTF-8: nothing was loaded"
        ) from error
    return next(csv.reader([decoded]), [])


def _load_rows(connection, plan, header_line, rest, file_name) -> int:
    """The file's rows into the table or the staging table, then the mode's step."""
    header = read_header(header_line, file_name)
    columns = match_columns(header, table_columns(connection, plan.table), file_name)
    if connection.dialect.name == "postgresql":
        stream = _HeaderThenRest(header_line, rest)
        rows = _copy_into_postgres(connection, plan, columns, stream)
    else:
        rows = generic_load.insert_in_batches(
            connection, plan.table, plan.mode, columns, rest, file_name=file_name
        )
    if plan.mode != "append":
        move_staged_rows(connection, plan, columns, file_name)
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
    still_as_listed: Callable[[], None] | None = None,
) -> LoadOutcome:
    """Load one CSV stream with its ledger row, in one transaction; its outcome.

    Content the ledger holds for this table already is rolled back, not loaded again.
    With `still_as_listed` (which raises FileChanged), the bytes read must be the
    listing's size, and it is asked once they are read, before the commit: the
    ledger's size and sha256 are then those of the file as it stays, byte for byte.
    """
    plan.check()
    ledger.create_ledger(engine)
    if progress is not None:
        progress.start_counting_rows()
        progress.add_rows(-1)  # the header's line
    hashing = _HashingReader(stream, progress)
    rest = io.BufferedReader(hashing, CHUNK_BYTES)
    header_line = rest.readline(MAX_HEADER_BYTES + 1)
    try:
        with engine.begin() as connection:
            rows = _load_rows(connection, plan, header_line, rest, listing.path)
            sha256 = _hash_the_rest(rest, hashing)
            _check_as_listed(hashing.bytes_read, listing, still_as_listed)
            if hashing.end_of_copy_line:
                raise generic_load.ContentError(
                    f"{listing.path}: a line holds only \\. , which PostgreSQL "
                    'reads as the end of the data: quote it ("\\."): nothing was '
                    "loaded"
                )
            if not ledger.record(
                connection,
                ledger.LedgerEntry(
                    listing.source, listing.path, listing.size, listing.modified,
                    sha256, rows, plan.table, plan.mode, flow_run_id,
                ),
            ):  # fmt: skip
                raise _LoadedBefore()
    except _LoadedBefore:
        return _skipped(hashing.bytes_read, sha256)
    except (psycopg2.Error, exc.DBAPIError, generic_load.ContentError) as error:
        if hashing.failure is not None:
            raise hashing.failure from error
        bad = _content_error(error, listing.path)
        if bad is error:
            raise  # not the content's doing (a lost connection): retries decide
        # The same rows again break a unique key before the ledger is asked.
        sha256 = _hash_the_rest(rest, hashing)
        with engine.connect() as connection:
            if ledger.holds(connection, plan.table, sha256, plan.mode):
                return _skipped(hashing.bytes_read, sha256)
        raise bad from error
    return LoadOutcome(rows, hashing.bytes_read, sha256, True)


def _check_as_listed(bytes_read: int, listing: Listing, still_as_listed) -> None:
    """With `still_as_listed` (a drop folder's file): FileChanged unless what was
    read is the file as listed, and stays so. A caller's own stream is its own."""
    if still_as_listed is None:
        return
    if bytes_read != listing.size:
        raise FileChanged(
            f"{listing.path}: {bytes_read:,} bytes read where {listing.size:,} were "
            "listed: it changed after it settled; nothing was loaded"
        )
    still_as_listed()


def _hash_the_rest(rest: io.BufferedReader, hashing: _HashingReader) -> str:
    """The file's sha256, once what the parser left (blank lines) is read too."""
    while rest.read(CHUNK_BYTES):
        pass
    hashing.finish()
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
    # SQLAlchemy wraps what its statements meet; COPY's errors come bare.
    driver_error = error.orig if isinstance(error, exc.DBAPIError) else error
    code = getattr(driver_error, "pgcode", None) or ""
    if code[:2] in _CONTENT_SQLSTATE_CLASSES:
        return _bad_value(driver_error, file_name)
    return error


def content_loaded_before(
    engine: Engine, plan: LoadPlan, listing: Listing, opener
) -> bool:
    """Whether the ledger holds this very file (source, path, size and content), so
    that loading it again would change nothing (ledger.holds): a run was killed
    between its commit and its move. Read (to hash it) only when its source, path
    and size are in the ledger."""
    ledger.create_ledger(engine)
    table = plan.table
    probe = ledger.LedgerEntry(
        listing.source, listing.path, listing.size, None, "", 0, table, "", None
    )
    with engine.connect() as connection:
        hashes = ledger.hashes_listed_before(connection, table, probe)
        if plan.mode in ledger.SNAPSHOT_MODES:
            hashes &= {ledger.latest_sha256(connection, table)}
    if not hashes:
        return False
    sha256 = hashlib.sha256()
    with opener() as reader:
        while data := reader.read(CHUNK_BYTES):
            sha256.update(data)
    return sha256.hexdigest() in hashes


class CommitUncertain(retries.PermanentFailure, RuntimeError):
    """The connection broke while the COMMIT was on its way: the statement may have
    committed or not, and running it again could apply it twice."""


@task(**retries.TRANSIENT_RETRIES)
def run_sql(
    target: database.DatabaseConnection | Engine,
    statement: str,
    parameters: dict[str, Any] | None = None,
) -> int:
    """Run one statement (text, or `sql/<file>.sql` from flows/sql/) with bound
    parameters, in its own transaction, before or after a load; rows it touched.

    A fault before the COMMIT is retried (the transaction rolled back); a fault
    during it is not (CommitUncertain), as the statement may be applied already."""
    with database.engine_of(target) as engine, engine.connect() as connection:
        transaction = connection.begin()
        result = connection.execute(database.statement_of(statement), parameters or {})
        touched = result.rowcount
        try:
            transaction.commit()
        except exc.DBAPIError as error:
            if not retries.is_transient(error):
                raise
            raise CommitUncertain(
                f"the connection broke while committing {statement.splitlines()[0][:80]!r}: "
                "it may have been applied; check the table before running it again"
            ) from error
    rows = f"{touched:,} rows" if touched >= 0 else "done"  # DDL counts no rows
    run_logger().info("ran %s: %s", statement.splitlines()[0][:80], rows)
    return touched
