"""The slower load path, for databases without PostgreSQL's COPY (SQLite in the tests).

Arrow's C++ reader splits the CSV (an empty unquoted field is missing, `""` an empty
string, as PostgreSQL reads it); each value is made the Python type of its column here,
so that a bad one is named with its line and column before anything is committed;
SQLAlchemy then inserts batches of rows (executemany) in the caller's transaction.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import BinaryIO, Callable

import pyarrow as pa
from pyarrow import csv
from sqlalchemy import Column, MetaData, String, Table, text
from sqlalchemy.engine import Connection

# The temporary table the modes other than append load into first.
STAGED = "flows_staged"
BATCH_ROWS = 10_000
READ_BLOCK_BYTES = 1 << 20
TRUE_TEXTS = ("t", "true", "1", "yes", "y")
FALSE_TEXTS = ("f", "false", "0", "no", "n")


class ContentError(ValueError):
    """A line of the file cannot be loaded: the message names it."""


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE_TEXTS:
        return True
    if lowered in FALSE_TEXTS:
        return False
    raise ValueError("not a boolean")


CONVERTERS: dict[type, Callable[[str], object]] = {
    int: int,
    float: float,
    Decimal: Decimal,
    bool: _boolean,
    datetime: datetime.fromisoformat,  # fractions and zones (Z, +02:00) kept
    date: date.fromisoformat,
    time: time.fromisoformat,
}


def decimal_text(value: str) -> str:
    """A number checked, as plain text (SQLite's decimals are bound as text)."""
    return format(Decimal(value), "f")


def converter_of(column: dict) -> Callable[[str], object] | None:
    """How text becomes the column's Python type; None keeps the text."""
    try:
        python_type = column["type"].python_type
    except NotImplementedError:
        return None
    return CONVERTERS.get(python_type)


def _converted(values: list, convert, name: str, first_line: int) -> list:
    if convert is None:
        return values
    out = []
    for offset, value in enumerate(values):
        try:
            out.append(None if value is None or value == "" else convert(value))
        except (ValueError, InvalidOperation) as error:
            raise ContentError(
                f"line {first_line + offset}, column {name}, value {value!r}: "
                f"not a {column_type_name(convert)} ({error})"
            ) from error
    return out


def column_type_name(convert) -> str:
    """The name a message gives a converter's type."""
    names = {_boolean: "boolean", Decimal: "number", decimal_text: "number"}
    return names.get(convert, getattr(convert, "__qualname__", "value").split(".")[0])


def _bind_type(column: dict, dialect: str):
    """The type values are bound as: the column's, but for SQLite's decimals, bound
    as their text (its NUMERIC affinity then keeps more digits than a float)."""
    column_type = column["type"]
    if dialect == "sqlite" and converter_of(column) is Decimal:
        return String()
    return column_type


def _table(name: str, columns: list[dict], dialect: str, **options) -> Table:
    """A Table of `columns` to insert into, typed for binding."""
    schema, _, name = name.rpartition(".")
    return Table(
        name,
        MetaData(),
        *(Column(c["name"], _bind_type(c, dialect)) for c in columns),
        schema=schema or None,
        **options,
    )


def _create_staging_table(connection: Connection, columns: list[dict]) -> None:
    """A temporary table of the file's columns, typed as the target's."""
    staged = Table(
        STAGED,
        MetaData(),
        *(Column(column["name"], column["type"]) for column in columns),
        prefixes=["TEMPORARY"],
    )
    drop_staging(connection)
    staged.create(connection)


def _batches(stream: BinaryIO, names: list[str], file_name: str):
    """Record batches of text, the header already read."""
    try:
        reader = csv.open_csv(
            stream,
            read_options=csv.ReadOptions(
                column_names=names, block_size=READ_BLOCK_BYTES
            ),
            # A quoted value may hold line ends (PostgreSQL's COPY reads them so);
            # without this Arrow fails such a file once it spans a read block.
            parse_options=csv.ParseOptions(newlines_in_values=True),
            convert_options=csv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                # Only an empty field is missing: Arrow's defaults ("NA", "n/a",
                # "null", ...) would turn a partner's bad values into NULLs.
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        yield from reader
    except pa.ArrowInvalid as error:
        raise ContentError(f"{file_name}: {error}: nothing was loaded") from error


def insert_in_batches(  # pylint: disable=too-many-arguments
    connection: Connection,
    table: str,
    mode: str,
    columns: list[dict],
    stream: BinaryIO,
    *,
    file_name: str,
) -> int:
    """Insert the file's rows into `table` (append) or the staging table; rows."""
    dialect = connection.dialect.name
    if mode != "append":
        _create_staging_table(connection, columns)
    into = _table(table if mode == "append" else STAGED, columns, dialect)
    names = [column["name"] for column in columns]
    converters = [converter_of(column) for column in columns]
    if dialect == "sqlite":
        converters = [decimal_text if c is Decimal else c for c in converters]
    rows = 0
    for batch in _batches(stream, names, file_name):
        first_line = rows + 2  # the header is line 1
        try:
            values = [
                _converted(batch.column(i).to_pylist(), converters[i], names[i],
                           first_line)
                for i in range(len(names))
            ]  # fmt: skip
        except ContentError as error:
            raise ContentError(f"{file_name}: {error}: nothing was loaded") from error
        if batch.num_rows:
            connection.execute(
                into.insert(), [dict(zip(names, row)) for row in zip(*values)]
            )
        rows += batch.num_rows
    return rows


def insert_staged(target: str, names: list[str]) -> str:
    """SQL that copies the staged rows into `target` (quoted names)."""
    columns = ", ".join(names)
    return f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {STAGED}"


def upsert_statements(connection: Connection, target: str, names: list[str], plan):
    """SQL that moves the staged rows in, replacing those of the same key."""
    quote = connection.dialect.identifier_preparer.quote
    key = [quote(name) for name in plan.key]
    insert = insert_staged(target, names)
    if connection.dialect.name in ("postgresql", "sqlite"):
        others = [name for name in names if name not in key]
        # Only rows whose values differ are written: an unchanged row is neither
        # rewritten (table bloat) nor passed to update triggers.
        distinct = (
            "IS DISTINCT FROM" if connection.dialect.name == "postgresql" else "IS NOT"
        )
        changed = " OR ".join(
            f"{target}.{name} {distinct} excluded.{name}" for name in others
        )
        action = (
            "DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in others)
            + f" WHERE {changed}"
            if others
            else "DO NOTHING"
        )
        # WHERE true: SQLite's parser needs it before ON CONFLICT after a SELECT.
        return [f"{insert} WHERE true ON CONFLICT ({', '.join(key)}) {action}"]
    same_key = " AND ".join(f"{STAGED}.{k} = {target}.{k}" for k in key)
    if connection.dialect.name == "mysql":  # MariaDB and MySQL
        others = [name for name in names if name not in key]
        same = " AND ".join(f"{target}.{n} <=> {STAGED}.{n}" for n in others)
        update = (
            [
                f"UPDATE {target} JOIN {STAGED} ON {same_key} SET "
                + ", ".join(f"{target}.{n} = {STAGED}.{n}" for n in others)
                + f" WHERE NOT ({same})"
            ]
            if others
            else []
        )
        # Only rows whose values differ are updated (<=>: equal, NULLs too), and
        # only new keys inserted: no row is deleted and inserted again.
        return update + [
            f"{insert} WHERE NOT EXISTS (SELECT 1 FROM {target} WHERE {same_key})"
        ]
    return [
        f"DELETE FROM {target} WHERE EXISTS (SELECT 1 FROM {STAGED} WHERE {same_key})",
        insert,
    ]


def drop_staging(connection: Connection) -> None:
    """Drop the staging table of a generic load, in its transaction."""
    # MariaDB and MySQL commit the transaction at a DROP TABLE, even of a temporary
    # table: DROP TEMPORARY TABLE does not.
    temporary = "TEMPORARY " if connection.dialect.name == "mysql" else ""
    connection.execute(text(f"DROP {temporary}TABLE IF EXISTS {STAGED}"))
