"""# Nightly orders extract (the toolkit's own test flow)

Reads two queries from the shop database, shapes them with pandas and delivers two CSV
files, concurrently: the orders of one day, and the totals per customer. A table
artifact of the run lists both. `env=dev` reads a SQLite database it makes itself;
`env=main` reads the blocks `fixture-database-main` and `fixture-sftp-main`.

The toolkit's tests deploy and run this flow instead of the example, which belongs to
the team that copies the template and is the first thing it deletes.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
from prefect import flow, task

import util
from fixture_data import fixture_database
from toolkit import connections
from toolkit.database import query_dataframe
from toolkit.delivery import deliver_frame, summarize_deliveries
from toolkit.retries import TRANSIENT_RETRIES

SYSTEM = "fixture"


def shape_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """One line per order: the customer's name upper-cased, sorted by order id."""
    shaped = orders.assign(customer=orders["customer"].str.upper())
    return shaped.sort_values("order_id", ignore_index=True)


def summarize_customers(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders and cents per customer, the largest total first."""
    totals = orders.groupby("customer", as_index=False).agg(
        orders=("order_id", "count"), total_cents=("amount_cents", "sum")
    )
    return totals.sort_values(
        ["total_cents", "customer"], ascending=[False, True], ignore_index=True
    )


@task(**TRANSIENT_RETRIES, task_run_name="extract {file_name}")
# Each input is one part of the extract, shown apart on the task run's page.
# pylint: disable-next=too-many-arguments,too-many-positional-arguments
def extract_and_deliver(source, sink, query, parameters, shape, file_name):
    """Query, shape, deliver: one file. A retry starts again from the query."""
    frame = query_dataframe.fn(source, query, parameters)
    return deliver_frame.fn(sink, shape(frame), file_name)


DEPLOYMENT = util.DeploymentSettings(
    schedule="0 2 * * *",
    timezone="America/Denver",
    main_parameters={"env": "main"},
    tags=("sales",),
    source_systems=("Shop database (PostgreSQL)",),
    sink_systems=("Partner SFTP server",),
    customer_contact="Sales data team <sales-data@example.invalid>",
)


@flow
def fixture_flow(env: Literal["dev", "main"] = "dev", day: str = "2024-08-01") -> dict:
    """Nightly extract of the shop database to the partner's two CSV files."""
    source = connections.database_for(SYSTEM, env, dev_default=fixture_database)
    sink = connections.sink_for(SYSTEM, env)
    extracts = [
        ("sql/orders_of_day.sql", {"day": day}, shape_orders, f"orders_{day}.csv"),
        ("sql/all_orders.sql", {}, summarize_customers, "customer_totals.csv"),
    ]
    futures = [
        extract_and_deliver.submit(source, sink, *extract) for extract in extracts
    ]
    reports = [future.result() for future in futures]
    # One table of every file of the run, on the UI's Artifacts page under this key.
    summarize_deliveries(reports, key=f"{SYSTEM}-deliveries-{env}")
    return {report.file: report.rows for report in reports}


if __name__ == "__main__":
    util.run_flow_command_line_interface(__file__, "fixture_flow")
