"""CSV to PostgreSQL: the toolkit's inbound load against psql's COPY and pandas.to_sql.

    .venv/bin/python bench/load.py --rows 2000000

Starts its own PostgreSQL on 127.0.0.1 (as the tests do), fills the outbound bench's
table (bench/etl.py: about 95 bytes a CSV row), and writes it to a CSV file with the
toolkit's own delivery (what a partner of the outbound half would get). Then loads that
file into a table of the same shape (primary key on id), each way in a child process of
its own, so that its peak memory is its own:
- limit: `psql -c "\\copy t FROM 'file' CSV HEADER"` into an empty table;
- append: the toolkit's load_stream (COPY FROM STDIN and the ledger row);
- upsert: the toolkit's load_stream, upsert on id, into a table already holding
  half of the keys (1,000,000 of 2,000,000);
- to_sql: pandas.read_csv in chunks of 10,000 rows, to_sql(method="multi");
- append_small: the toolkit's append of the first quarter of the file, for memory.
It checks the rows each load left, prints seconds and peak RSS of each, and last the
line `append_over_limit=A upsert_over_limit=U to_sql_over_append=T peak_rss_mb=M
rows=N`, where M is the largest peak RSS of the toolkit's loads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parent.parent
sys.path[:0] = [
    str(REPOSITORY_DIR / "flows"),
    str(REPOSITORY_DIR / "tools"),
    str(REPOSITORY_DIR / "bench"),
]

# pylint: disable=wrong-import-position
import services  # noqa: E402
from etl import CREATE_TABLE, TABLE, measure  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

VARIANTS = ("limit", "append", "upsert", "to_sql", "append_small")
TOOLKIT_VARIANTS = ("append", "upsert", "append_small")
TO_SQL_CHUNK_ROWS = 10_000


def run_variant(variant: str, setup: dict) -> None:
    """The body of one child process: load the file one way."""
    # pylint: disable=import-outside-toplevel
    import pandas as pd

    from toolkit import loading

    # Imports (Prefect alone takes about 3 s) are paid once per process: time the
    # work only, and note the memory the imports took.
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine = create_engine(setup["database_url"])
    path = Path(setup["files"][variant])
    started = time.perf_counter()
    if variant == "to_sql":
        with engine.begin() as connection:
            for chunk in pd.read_csv(path, chunksize=TO_SQL_CHUNK_ROWS):
                chunk.to_sql(
                    "load_to_sql",
                    connection,
                    if_exists="append",
                    index=False,
                    method="multi",
                )
    else:
        plan = loading.LoadPlan(
            f"load_{variant}",
            "upsert" if variant == "upsert" else "append",
            ("id",) if variant == "upsert" else (),
        )
        listing = loading.Listing(
            str(path.parent), path.name, path.stat().st_size, datetime.now(timezone.utc)
        )
        with open(path, "rb") as stream:
            outcome = loading.load_stream(engine, stream, plan, listing)
        assert outcome.loaded
    seconds = time.perf_counter() - started
    engine.dispose()
    print(json.dumps({"seconds": seconds, "baseline_mb": baseline_mb}), flush=True)


def write_files(database_url: str, rows: int, folder: Path) -> dict:
    """The table as the outbound half writes it: the whole, and its first quarter.

    Run in a child: a child forked from a parent that imported pandas and Prefect
    would count the parent's memory in its own peak RSS (Linux's ru_maxrss)."""
    # pylint: disable-next=import-outside-toplevel
    from toolkit import delivery

    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(CREATE_TABLE.format(rows=rows)))
        for variant in VARIANTS:
            connection.execute(
                text(f"CREATE TABLE load_{variant} (LIKE {TABLE}, PRIMARY KEY (id))")
            )
        # Half of the keys, with other values: the upsert replaces these rows.
        connection.execute(
            text(
                "INSERT INTO load_upsert SELECT id, created_at, name, email, 0,"
                f" 'old', token FROM {TABLE} WHERE id <= {rows // 2}"
            )
        )
    sink = delivery.LocalFolderSink(str(folder))
    for name, limit in (("whole.csv", rows), ("quarter.csv", rows // 4)):
        delivery.deliver_query_as_is.fn(
            engine, f"SELECT * FROM {TABLE} ORDER BY id LIMIT {limit}", sink, name
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE load_upsert"))
    engine.dispose()
    whole, quarter = str(folder / "whole.csv"), str(folder / "quarter.csv")
    return {variant: whole for variant in VARIANTS} | {"append_small": quarter}


def limit_command(setup: dict, postgres: services.Postgres) -> list[str]:
    """psql's \\copy of the file into the empty table: the machine's limit."""
    copy = f"\\copy load_limit FROM '{setup['files']['limit']}' CSV HEADER"
    return [
        "psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", postgres.user,
        "-d", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", copy,
    ]  # fmt: skip


def rows_in(postgres: services.Postgres, table: str) -> int:
    """Rows the load left in `table`."""
    engine = create_engine(postgres.url())
    with engine.connect() as connection:
        count = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
    engine.dispose()
    return count


def benchmark(rows: int, folder: Path) -> dict[str, tuple]:
    """Start the server, write the files, run each variant once; the figures."""
    results = {}
    with services.running_postgres() as postgres:
        prepared = subprocess.run(
            [sys.executable, __file__, "--prepare", postgres.url()]
            + ["--rows", str(rows), "--folder", str(folder)],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        setup = {
            "database_url": postgres.url(),
            "files": json.loads(prepared.stdout.strip().splitlines()[-1]),
        }
        size_mb = Path(setup["files"]["append"]).stat().st_size / 1e6
        print(f"file: {size_mb:.1f} MB, {rows} rows", flush=True)
        environment = {**os.environ, "PGPASSWORD": postgres.password}
        for variant in VARIANTS:
            command = (
                limit_command(setup, postgres)
                if variant == "limit"
                else [sys.executable, __file__, "--child", variant]
                + ["--setup", json.dumps(setup)]
            )
            results[variant] = measure(command, environment)
            expected = rows // 4 if variant == "append_small" else rows
            loaded = rows_in(postgres, f"load_{variant}")
            if loaded != expected:
                raise RuntimeError(f"{variant} left {loaded} rows, not {expected}")
            seconds, peak, baseline = results[variant]
            print(
                f"{variant:13} {seconds:7.2f} s  peak RSS {peak:7.1f} MB "
                f"(after imports {baseline:5.1f} MB)  {loaded} rows in the table",
                flush=True,
            )
    return results


def main() -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--child", choices=VARIANTS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="/tmp", help="where the CSV files go")
    options = parser.parse_args()
    if options.child:
        run_variant(options.child, json.loads(options.setup))
        return
    if options.prepare:
        files = write_files(options.prepare, options.rows, Path(options.folder))
        print(json.dumps(files), flush=True)
        return
    folder = Path(options.folder) / f"bench-load-{os.getpid()}"
    folder.mkdir(parents=True)
    try:
        results = benchmark(options.rows, folder)
    finally:
        for path in folder.glob("*"):
            path.unlink()
        folder.rmdir()
    limit = results["limit"][0]
    print(
        f"append_over_limit={results['append'][0] / limit:.2f} "
        f"upsert_over_limit={results['upsert'][0] / limit:.2f} "
        f"to_sql_over_append={results['to_sql'][0] / results['append'][0]:.2f} "
        f"peak_rss_mb={max(results[v][1] for v in TOOLKIT_VARIANTS):.0f} "
        f"rows={options.rows}"
    )


if __name__ == "__main__":
    main()
