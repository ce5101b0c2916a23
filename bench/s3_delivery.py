"""Database to S3: the template's multipart sink against a local folder and a naive
upload, time and peak memory.

    .venv/bin/python bench/s3_delivery.py --rows 2700000

Starts its own PostgreSQL and moto S3 server on 127.0.0.1 (as the tests do) and
delivers the rows of one query (about 77 bytes a CSV row: 2,700,000 make 209 MB) as
one CSV three ways, each in a child process of its own so that its peak memory is its
own:
- local: deliver_query_as_is to a LocalFolderSink (the baseline: no network);
- s3: deliver_query_as_is to an S3Sink (multipart, parts of 8 MiB as they fill);
- naive: the same CSV into memory whole, then one put_object.
It prints each path's seconds, peak RSS and RSS over its imports, and last the line
`s3_over_local=R s3_extra_rss_mb=M naive_extra_rss_mb=N`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPOSITORY_DIR / "flows"), str(REPOSITORY_DIR / "tools")]

# pylint: disable=wrong-import-position
import services  # noqa: E402

QUERY = """
SELECT g AS id, md5(g::text) AS token, g * 0.25 AS amount,
       timestamp '2024-01-01' + g * interval '1 second' AS happened
FROM generate_series(1, :rows) AS g
"""
BUCKET = "bench-deliveries"
KEY_ID, SECRET = "AKIABENCH0000000", "bench-secret-not-real"


def _resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(path: str, rows: int, database_url: str, endpoint: str, folder: str):
    """One delivery in this process; prints its figures as JSON."""
    # pylint: disable=import-outside-toplevel
    from prefect.blocks.system import Secret

    from toolkit import database, delivery  # imported before the baseline is read
    from toolkit.object_storage import S3Connection

    del delivery
    connection = S3Connection(
        bucket=BUCKET,
        endpoint_url=endpoint,
        access_key_id=Secret(value=KEY_ID),
        secret_access_key=Secret(value=SECRET),
    )
    source = database.DatabaseConnection(url=database_url)
    imported = _resident_bytes()
    started = time.monotonic()
    size = _deliver(path, rows, source, connection, folder)
    figures = {"seconds": time.monotonic() - started, "bytes": size}
    figures["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({**figures, "imported_rss": imported}))


def _deliver(path: str, rows: int, source, connection, folder: str) -> int:
    """One path's delivery; the bytes delivered."""
    # pylint: disable=import-outside-toplevel
    from toolkit import database, delivery
    from toolkit.object_storage import S3Sink

    if path == "naive":
        whole = io.BytesIO()
        database.copy_query_as_csv(source, QUERY, whole, {"rows": rows})
        connection.client().put_object(
            Bucket=BUCKET, Key="naive.csv", Body=whole.getvalue()
        )
        return len(whole.getvalue())
    sink = S3Sink(connection) if path == "s3" else delivery.LocalFolderSink(folder)
    return delivery.deliver_query_as_is.fn(
        source, QUERY, sink, f"{path}.csv", parameters={"rows": rows}
    ).bytes


def run_child(path: str, arguments: list[str]) -> dict:
    """The figures of one delivery in a process of its own."""
    completed = subprocess.run(
        [sys.executable, __file__, "--child", path, *arguments],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    """Start the servers, run the three paths, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=2_700_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--context", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child, options.rows, *options.context)
        return
    with services.running_postgres() as postgres, services.running_s3_server() as s3:
        os.environ.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
        # pylint: disable-next=import-outside-toplevel
        import botocore.session

        botocore.session.get_session().create_client(
            "s3", region_name="us-east-1", endpoint_url=s3.endpoint_url
        ).create_bucket(Bucket=BUCKET)
        folder = REPOSITORY_DIR / "flows" / "output" / "bench"
        context = [postgres.url(), s3.endpoint_url, str(folder)]
        arguments = ["--rows", str(options.rows), "--context", *context]
        runs = {path: run_child(path, arguments) for path in ("local", "s3", "naive")}
    print_figures(runs)


def print_figures(runs: dict) -> None:
    """A line per path, then the ratios."""
    mib = 2**20
    for path, run in runs.items():
        over_imports = (run["peak_rss"] - run["imported_rss"]) / mib
        print(
            f"{path:6} {run['bytes'] / 1e6:7.1f} MB {run['seconds']:6.1f} s  peak RSS "
            f"{run['peak_rss'] / mib:5.0f} MiB, {over_imports:4.0f} MiB over its imports"
        )
    local, remote, naive = runs["local"], runs["s3"], runs["naive"]
    print(
        f"s3_over_local={remote['seconds'] / local['seconds']:.2f} "
        f"s3_extra_rss_mb={(remote['peak_rss'] - local['peak_rss']) / mib:.0f} "
        f"naive_extra_rss_mb={(naive['peak_rss'] - local['peak_rss']) / mib:.0f}"
    )


if __name__ == "__main__":
    main()
