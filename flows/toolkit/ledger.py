"""The ledger of loaded files: one row per file, in the target database, in the same
transaction as the file's rows.

A file's rows and its ledger row commit together or not at all, so the ledger says
exactly what the tables hold. The unique key (target table, sha256) makes a second
load of the same content a no-op, whatever its name and however it came about (a
retry, a rerun after a run killed between the commit and the move, the partner
sending it twice). A snapshot (truncate or replace) is a no-op only while it is
the table's latest load: Monday's snapshot sent again on Wednesday, after
Tuesday's, is loaded again, and its ledger row moves to Wednesday. The first load
creates the table; `flows_inbound_ledger` is its name in every database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    exc,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

LEDGER_TABLE_NAME = "flows_inbound_ledger"
METADATA = MetaData()
LEDGER = Table(
    LEDGER_TABLE_NAME,
    METADATA,
    # Integer: SQLite makes only an INTEGER PRIMARY KEY count up by itself.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("source", String(1000), nullable=False),
    Column("path", String(1000), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("modified", DateTime(timezone=True), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("target_table", String(300), nullable=False),
    Column("mode", String(20), nullable=False),
    Column("flow_run_id", String(64)),
    Column(
        "loaded_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.current_timestamp(),  # pylint: disable=not-callable
    ),
    UniqueConstraint("target_table", "sha256", name="flows_inbound_ledger_once"),
)


@dataclass(frozen=True)
class LedgerEntry:  # pylint: disable=too-many-instance-attributes
    """What the ledger records of one loaded file."""

    source: str
    path: str
    size: int
    modified: datetime
    sha256: str
    rows: int
    target_table: str
    mode: str
    flow_run_id: str | None


def create_ledger(engine: Engine) -> None:
    """Create the ledger table unless it exists; two runs may race to do it."""
    try:
        with engine.begin() as connection:
            METADATA.create_all(connection, checkfirst=True)
    except (exc.IntegrityError, exc.ProgrammingError):
        # Another run created it between the check and the CREATE: it exists now.
        with engine.connect() as connection:
            if not engine.dialect.has_table(connection, LEDGER_TABLE_NAME):
                raise


# Modes whose load sets what the table (or a slice of it) holds: loading the same
# content again changes nothing only when nothing was loaded since.
SNAPSHOT_MODES = ("truncate", "replace")


def loaded_before(connection: Connection, target_table: str, sha256: str):
    """The ledger row of the content `sha256` in `target_table`, or None."""
    query = select(LEDGER).where(
        LEDGER.c.target_table == target_table, LEDGER.c.sha256 == sha256
    )
    return connection.execute(query).first()


def latest_sha256(connection: Connection, target_table: str) -> str | None:
    """The content of the table's latest load, or None."""
    query = (
        select(LEDGER.c.sha256)
        .where(LEDGER.c.target_table == target_table)
        .order_by(LEDGER.c.id.desc())
        .limit(1)
    )
    return connection.execute(query).scalar()


def holds(connection: Connection, target_table: str, sha256: str, mode: str) -> bool:
    """Whether loading this content in this mode would change nothing: appended or
    upserted content once loaded; a snapshot while it is the table's latest load."""
    if mode in SNAPSHOT_MODES:
        return latest_sha256(connection, target_table) == sha256
    return loaded_before(connection, target_table, sha256) is not None


def hashes_listed_before(
    connection: Connection, target_table: str, entry: LedgerEntry
) -> set[str]:
    """The contents (sha256) loaded before from a file of this source, path and size:
    where the file at hand is one of them, a run was killed before its move."""
    query = select(LEDGER.c.sha256).where(
        LEDGER.c.target_table == target_table,
        LEDGER.c.source == entry.source,
        LEDGER.c.path == entry.path,
        LEDGER.c.size == entry.size,
    )
    return {sha256 for (sha256,) in connection.execute(query)}


def record(connection: Connection, entry: LedgerEntry) -> bool:
    """Add `entry` in the caller's transaction; False if its content was loaded
    before (the unique key held), which the caller answers by rolling back. A
    snapshot loaded before, but not last, takes its old row's place."""
    values = vars(entry)
    if entry.mode in SNAPSHOT_MODES:
        if latest_sha256(connection, entry.target_table) == entry.sha256:
            return False
        connection.execute(
            LEDGER.delete().where(
                LEDGER.c.target_table == entry.target_table,
                LEDGER.c.sha256 == entry.sha256,
            )
        )
    dialect = connection.dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
        statement = insert(LEDGER).values(values).on_conflict_do_nothing()
        return connection.execute(statement).rowcount == 1
    if loaded_before(connection, entry.target_table, entry.sha256) is not None:
        return False
    connection.execute(LEDGER.insert().values(values))
    return True


def loads_from(connection: Connection, source: str, target_table: str, limit: int):
    """(path, loaded_at) of the latest `limit` loads from `source` into the table,
    latest first; loaded_at timezone-aware."""
    query = (
        select(LEDGER.c.path, LEDGER.c.loaded_at)
        .where(LEDGER.c.source == source, LEDGER.c.target_table == target_table)
        .order_by(LEDGER.c.loaded_at.desc(), LEDGER.c.id.desc())
        .limit(limit)
    )
    return [
        (path, at if at.tzinfo else at.replace(tzinfo=timezone.utc))
        for path, at in connection.execute(query)
    ]
