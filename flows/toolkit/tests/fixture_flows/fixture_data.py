"""The fixture flow's shop database: customers and their orders, made deterministically."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, Table, Text
from sqlalchemy.engine import Engine

from toolkit.database import DatabaseConnection, sqlite_database

CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli")
DAYS = ("2024-07-31", "2024-08-01", "2024-08-02")
METADATA = MetaData()
ORDERS = Table(
    "orders",
    METADATA,
    Column("order_id", Integer, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("placed_on", Text, nullable=False),
    Column("amount_cents", Integer, nullable=False),
)


def fixture_rows() -> list[dict]:
    """Sixty orders spread over the customers and days, the same on every machine."""
    return [
        {
            "order_id": number,
            "customer": CUSTOMERS[number % len(CUSTOMERS)],
            "placed_on": DAYS[number % len(DAYS)],
            "amount_cents": (number * 7919) % 100_000,
        }
        for number in range(1, 61)
    ]


def load_fixture_data(engine: Engine) -> None:
    """Create the orders table in `engine`'s database and fill it."""
    with engine.begin() as connection:
        METADATA.create_all(connection)
        connection.execute(ORDERS.insert(), fixture_rows())


def fixture_database(folder: Path) -> DatabaseConnection:
    """The SQLite shop database in `folder`, made on first use."""
    return sqlite_database(folder / "fixture_shop.sqlite", load_fixture_data)
