"""Four extracts together against one after another (goal P3 >= 3).

    .venv/bin/python bench/concurrency.py [--wait 1.0] [--repeat 3]

Starts its own PostgreSQL (with the toolkit's fixture shop data) and sshd on
127.0.0.1, as the tests do. Each of four extracts (the orders of three days, and the
totals per customer) waits --wait seconds inside the database (`pg_sleep`, standing
for a slow query on a busy server), then is shaped with pandas and delivered over
SFTP by the fixture flow's task. The same four extracts run once as a flow runs them
(submitted, concurrent) and once strictly in order, each
in a flow of its own in this process. Prints, for each, the seconds of the four
extracts inside the flow run and of the whole flow run (which adds Prefect's fixed cost
of starting and ending a run), the best of --repeat, and last the speed-ups.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench_environment import FIXTURE_FLOWS_DIR  # isort: skip

# pylint: disable=wrong-import-position
from prefect import flow  # noqa: E402
from prefect.blocks.system import Secret  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402

import local_prefect  # noqa: E402
import services  # noqa: E402
from fixture_data import DAYS, load_fixture_data  # noqa: E402
from fixture_flow import (  # noqa: E402
    extract_and_deliver,
    shape_orders,
    summarize_customers,
)
from toolkit import database  # noqa: E402
from toolkit.database import DatabaseConnection, read_sql_file  # noqa: E402
from toolkit.delivery import SftpSink  # noqa: E402
from toolkit.sftp import SftpConnection  # noqa: E402

# The fixture flow's queries, not the team's flows/sql/.
database.SQL_DIR = FIXTURE_FLOWS_DIR / "sql"


def slow_extracts(wait_seconds: float) -> list[tuple]:
    """Four extracts (query, parameters, shape, file), each query waiting
    `wait_seconds` in the database."""

    def slow(file_name: str) -> str:
        sql = read_sql_file(file_name)
        return f"SELECT r.* FROM ({sql}) AS r CROSS JOIN pg_sleep({wait_seconds:f})"

    extracts = [
        (slow("orders_of_day"), {"day": day}, shape_orders, f"orders_{day}.csv")
        for day in DAYS
    ]
    return extracts + [
        (slow("all_orders"), {}, summarize_customers, "customer_totals.csv")
    ]


@flow(name="bench-concurrent")
def concurrent_flow(source, sink, extracts) -> float:
    """As a flow does it: all four submitted at once; their seconds."""
    started = time.perf_counter()
    futures = [
        extract_and_deliver.submit(source, sink, *extract) for extract in extracts
    ]
    for future in futures:
        future.result()
    return time.perf_counter() - started


@flow(name="bench-in-order")
def in_order_flow(source, sink, extracts) -> float:
    """The same task, each extract waited for before the next starts; their seconds."""
    started = time.perf_counter()
    for extract in extracts:
        extract_and_deliver(source, sink, *extract)
    return time.perf_counter() - started


def timed(run) -> tuple[float, float]:
    """Seconds of the extracts inside the flow run, and of the whole flow run."""
    started = time.perf_counter()
    inside = run()
    return inside, time.perf_counter() - started


def measure(wait_seconds: float, repeat: int) -> tuple[tuple, tuple]:
    """Best (extracts, whole run) seconds of the concurrent and the in-order flow."""
    with services.running_postgres() as postgres, services.running_sshd() as sshd:
        load_fixture_data(create_engine(postgres.url()))
        source = DatabaseConnection(
            url=postgres.url(password=False), password=Secret(value=postgres.password)
        )
        sink = SftpSink(
            SftpConnection(
                host="127.0.0.1",
                port=sshd.port,
                username=sshd.user,
                private_key=Secret(value=sshd.client_key),
                known_hosts=sshd.known_hosts_line,
                remote_dir=str(sshd.folder / "partner"),
            )
        )
        extracts = slow_extracts(wait_seconds)
        concurrent_flow(source, sink, extracts)  # warm-up: imports, first connections
        together = min(
            timed(lambda: concurrent_flow(source, sink, extracts))
            for _ in range(repeat)
        )
        in_order = min(
            timed(lambda: in_order_flow(source, sink, extracts)) for _ in range(repeat)
        )
    return together, in_order


def main() -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--wait", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    # Deployed flows talk to a Prefect server in another process: so does this one.
    home = Path(os.environ["PREFECT_HOME"]) / "server"
    with local_prefect.serving(home, services.free_port()):
        together, in_order = measure(options.wait, options.repeat)
    print(f"each extract waits {options.wait:.2f} s in the database")
    print(f"best of {options.repeat}    extracts   whole flow run")
    print(f"four together   {together[0]:6.2f} s   {together[1]:6.2f} s")
    print(f"one after other {in_order[0]:6.2f} s   {in_order[1]:6.2f} s")
    print(
        f"whole_run_speedup={in_order[1] / together[1]:.2f} "
        f"concurrent_speedup={in_order[0] / together[0]:.2f}"
    )


if __name__ == "__main__":
    main()
