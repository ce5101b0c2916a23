"""Database to SFTP: the template's paths against a naive one and the machine's limit.

    .venv/bin/python bench/etl.py --rows 2000000

Starts its own PostgreSQL and sshd on 127.0.0.1 (as the tests do), fills a table of
--rows rows (about 95 bytes a CSV row), and delivers it as one CSV over SFTP four ways,
each in a child process of its own so that its peak memory is its own:
- limit: `psql \\copy ... to stdout csv | ssh ... 'cat > file'`, no Python at all;
- fast: the template's deliver_query_as_is (COPY into the SFTP file, no DataFrame);
- chunked: the template's deliver_query_in_chunks (pandas, 50,000 rows at a time);
- naive: pandas.read_sql of everything, DataFrame.to_csv, paramiko putfo.
It checks that each delivered exactly --rows rows, prints seconds and peak RSS of each,
and last the line `fast_over_limit=R1 naive_over_chunked=R2 fast_peak_rss_mb=M`.
The template's paths print their progress lines on stderr; `--progress-seconds 1`
shows them on a file that moves faster than the default interval (30 s).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPOSITORY_DIR / "flows"), str(REPOSITORY_DIR / "tools")]

# pylint: disable=wrong-import-position
import services  # noqa: E402
from toolkit.streams import PROGRESS_SECONDS  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

TABLE = "extract_rows"
QUERY = f"SELECT * FROM {TABLE} ORDER BY id"
VARIANTS = ("limit", "fast", "chunked", "naive")
CREATE_TABLE = """
CREATE TABLE extract_rows AS
SELECT g AS id,
       timestamp '2024-01-01' + g * interval '1 second' AS created_at,
       'student-' || g AS name,
       'student' || g || '@example.edu' AS email,
       round((g % 100000) / 100.0, 2) AS amount,
       (ARRAY['active', 'graduated', 'withdrawn'])[1 + g % 3] AS status,
       substr(md5(g::text), 1, 12) AS token
FROM generate_series(1, {rows:d}) AS g
"""


def _connections(setup: dict):
    # pylint: disable=import-outside-toplevel
    from prefect.blocks.system import Secret

    from toolkit.database import DatabaseConnection
    from toolkit.sftp import SftpConnection

    source = DatabaseConnection(url=setup["database_url"])
    sftp_connection = SftpConnection(
        host="127.0.0.1",
        port=setup["sftp_port"],
        username=setup["sftp_user"],
        private_key=Secret(value=Path(setup["client_key"]).read_text("utf-8")),
        known_hosts=setup["known_hosts"],
        remote_dir=setup["remote_dir"],
    )
    return source, sftp_connection


def run_variant(variant: str, setup: dict) -> None:
    """The body of one child process: deliver the table one way."""
    # pylint: disable=import-outside-toplevel
    from toolkit import delivery

    # Outside a run the toolkit logs to `flows`; Prefect's console handler prints it.
    logging.getLogger("flows").setLevel(logging.INFO)
    progress = {"progress_seconds": setup["progress_seconds"]}
    source, sftp_connection = _connections(setup)
    file_name = f"{variant}.csv"
    # Imports (Prefect alone takes about 3 s) are paid once per process, not per
    # extract: time the work only, and note the memory the imports took.
    started = time.perf_counter()
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if variant == "fast":
        delivery.deliver_query_as_is.fn(
            source, QUERY, delivery.SftpSink(sftp_connection), file_name, **progress
        )
    elif variant == "chunked":
        delivery.deliver_query_in_chunks.fn(
            source, QUERY, delivery.SftpSink(sftp_connection), file_name, **progress
        )
    elif variant == "naive":
        import pandas as pd

        from toolkit import sftp

        frame = pd.read_sql(QUERY, source.create_engine())
        data = frame.to_csv(index=False).encode()
        with sftp.open_sftp(sftp_connection) as session:
            session.putfo(io.BytesIO(data), f"{setup['remote_dir']}/{file_name}")
    else:
        raise ValueError(variant)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "baseline_mb": baseline_mb}), flush=True)


def limit_command(setup: dict, postgres: services.Postgres) -> list[str]:
    """psql's \\copy piped into OpenSSH's ssh: the fastest the machine moves the data."""
    copy = f"\\copy ({QUERY}) to stdout with (format csv, header)"
    psql = (
        f"psql -h 127.0.0.1 -p {postgres.port} -U {postgres.user} -d postgres "
        f"-X -q -c {shlex.quote(copy)}"
    )
    ssh = (
        f"ssh -p {setup['sftp_port']} -i {setup['client_key']} -o BatchMode=yes "
        f"-o UserKnownHostsFile={setup['known_hosts_file']} "
        f"-o StrictHostKeyChecking=yes {setup['sftp_user']}@127.0.0.1 "
        f"{shlex.quote('cat > ' + setup['remote_dir'] + '/limit.csv')}"
    )
    return ["bash", "-o", "pipefail", "-c", f"{psql} | {ssh}"]


def measure(command: list[str], environment: dict) -> tuple[float, float, float]:
    """Run `command`: seconds of its work, its peak RSS and its RSS after imports (MB).

    A Python child reports the seconds of its work after its imports, a shell
    pipeline is timed whole; the peak RSS covers the child's whole process tree.
    """
    started = time.perf_counter()
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        command, env=environment, stdout=subprocess.PIPE, text=True
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed with status {process.returncode}")
    report = json.loads(output.strip().splitlines()[-1]) if output.strip() else {}
    return (
        report.get("seconds", seconds),
        usage.ru_maxrss / 1024,
        report.get("baseline_mb", 0.0),
    )


def count_rows(path: Path) -> int:
    """Data rows of a delivered CSV (lines less the header)."""
    with open(path, "rb") as file:
        return (
            sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
            - 1
        )


def prepare(
    postgres: services.Postgres, sshd: services.Sshd, rows: int, progress_seconds
) -> dict:
    """Fill the table, make the partner's folder; what the variants need to know."""
    engine = create_engine(postgres.url())
    with engine.begin() as connection:
        connection.execute(text(CREATE_TABLE.format(rows=rows)))
    engine.dispose()
    remote_dir = sshd.folder / "partner"
    remote_dir.mkdir()
    known_hosts_file = sshd.folder / "known_hosts"
    known_hosts_file.write_text(sshd.known_hosts_line + "\n", encoding="utf-8")
    return {
        "database_url": postgres.url(),
        "sftp_port": sshd.port,
        "sftp_user": sshd.user,
        "client_key": str(sshd.folder / "client_key"),
        "known_hosts": sshd.known_hosts_line,
        "known_hosts_file": str(known_hosts_file),
        "remote_dir": str(remote_dir),
        "progress_seconds": progress_seconds,
    }


def variant_command(variant: str, setup: dict, postgres: services.Postgres) -> list:
    """The limit's shell pipeline, or this script as the child of a Python variant."""
    if variant == "limit":
        return limit_command(setup, postgres)
    return [sys.executable, __file__, "--child", variant, "--setup", json.dumps(setup)]


def benchmark(rows: int, variants: list[str], progress_seconds) -> dict[str, tuple]:
    """Set the servers up, run each variant once, check its file; the figures."""
    results = {}
    with services.running_postgres() as postgres, services.running_sshd() as sshd:
        setup = prepare(postgres, sshd, rows, progress_seconds)
        remote_dir = Path(setup["remote_dir"])
        environment = {**os.environ, "PGPASSWORD": postgres.password}
        for variant in variants:
            results[variant] = measure(
                variant_command(variant, setup, postgres), environment
            )
            delivered = count_rows(remote_dir / f"{variant}.csv")
            if delivered != rows:
                raise RuntimeError(f"{variant} delivered {delivered} rows, not {rows}")
            size_mb = (remote_dir / f"{variant}.csv").stat().st_size / 1e6
            seconds, peak, baseline = results[variant]
            print(
                f"{variant:8} {seconds:7.2f} s  peak RSS {peak:7.1f} MB "
                f"(after imports {baseline:5.1f} MB)  "
                f"{size_mb:7.1f} MB delivered, {delivered} rows",
                flush=True,
            )
            (remote_dir / f"{variant}.csv").unlink()
    return results


def main() -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--progress-seconds",
        type=float,
        default=PROGRESS_SECONDS,
        help="interval of the progress lines (default: %(default)s, the toolkit's)",
    )
    parser.add_argument("--child", choices=VARIANTS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        run_variant(options.child, json.loads(options.setup))
        return
    variants = options.variants.split(",")
    print(f"rows={options.rows} variants={','.join(variants)}", flush=True)
    results = benchmark(options.rows, variants, options.progress_seconds)
    if set(VARIANTS) <= set(results):
        print(
            f"fast_over_limit={results['fast'][0] / results['limit'][0]:.2f} "
            f"naive_over_chunked={results['naive'][0] / results['chunked'][0]:.2f} "
            f"fast_peak_rss_mb={results['fast'][1]:.0f}"
        )


if __name__ == "__main__":
    main()
