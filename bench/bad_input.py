"""Bad partner files: what each costs the toolkit's load, against loading nothing.

    .venv/bin/python bench/bad_input.py

Starts its own PostgreSQL on 127.0.0.1 (as the tests do). The files are those of
flows/toolkit/tests/test_bad_input.py (its CASES, read from the test module, so that
the bench and the test cannot drift apart), plus its 2 GB line with no line end, made
as it is read so that it is never on disk nor in memory. Each file is loaded with
toolkit.loading.load_stream into an empty `scores` table of a database made afresh
for it, in a child process of its own, so that its peak memory is its own. The
baseline is the same child that only imports toolkit.loading and creates the engine.

It checks each outcome against the test's expectation and the database against the
outcome (the rows and one ledger row, or nothing at all), then prints one row per
file: its outcome (rows loaded, or the start of the one line that refused it), the
bytes read of it, the child's peak RSS and that peak over the baseline's; last the
line `cases=N loaded=L refused=R baseline_rss_mb=B max_peak_over_baseline=X`.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parent.parent
TESTS_DIR = REPOSITORY_DIR / "flows" / "toolkit" / "tests"
sys.path[:0] = [str(REPOSITORY_DIR / "flows"), str(REPOSITORY_DIR / "tools")]

# pylint: disable=wrong-import-position
import services  # noqa: E402

DATABASE = "bad_input_bench"
BASELINE = "baseline"
ENDLESS = "endless-2-gb-line"
ENDLESS_BYTES = 2 * 1024**3
OUTCOME_CHARS = 80
CHILDREN_AT_ONCE = 2


class EndlessLine(io.RawIOBase):
    """One line of `size` bytes with no line end, made as it is read (as the test's
    ENDLESS_LINE script makes it): only what the load reads is ever in memory."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(len(buffer), self.left)
        buffer[:size] = b"a" * size
        self.left -= size
        return size

    def tell(self) -> int:
        return self.size - self.left


def partner_file(case: str) -> tuple[io.RawIOBase | io.BytesIO, int]:
    """The case's file as a stream, and its size: the 2 GB line made here, any
    other case's content from stdin."""
    if case == ENDLESS:
        return EndlessLine(ENDLESS_BYTES), ENDLESS_BYTES
    content = sys.stdin.buffer.read()
    return io.BytesIO(content), len(content)


def run_case(case: str, database_url: str) -> None:
    """The body of one child process: load one file, report what it cost."""
    # pylint: disable=import-outside-toplevel
    from sqlalchemy import create_engine

    from toolkit import loading
    from toolkit.streams import peak_rss_bytes

    engine = create_engine(database_url)
    report = {"outcome": "imports toolkit.loading, creates the engine"}
    report["bytes_read"] = 0
    if case != BASELINE:
        stream, size = partner_file(case)
        listing = loading.Listing(
            "/drop", f"{case}.csv", size, datetime.now(timezone.utc)
        )
        try:
            outcome = loading.load_stream(
                engine, stream, loading.LoadPlan("scores"), listing
            )
            report["outcome"] = f"loaded {outcome.rows} rows"
            report["rows"] = outcome.rows
        except loading.BadFile as error:
            report["outcome"] = f"refused: {error}"
        # What the load pulled from the partner's file: a refusal should stop early.
        report["bytes_read"] = stream.tell()
    engine.dispose()
    report["peak_rss_mb"] = peak_rss_bytes() / 1024**2
    print(json.dumps(report), flush=True)


def child_command(case: str, database_url: str) -> list[str]:
    """This script as the child process of `case`."""
    return [sys.executable, __file__, "--child", case, "--database-url", database_url]


def load_in_child(case: str, database_url: str, content: bytes = b"") -> dict:
    """Run the child of one case, `content` on its stdin; its report, with its own
    peak RSS (VmHWM: ru_maxrss would carry this process's peak over)."""
    completed = subprocess.run(
        child_command(case, database_url),
        input=content,
        stdout=subprocess.PIPE,
        check=True,
    )
    return json.loads(completed.stdout.decode().strip().splitlines()[-1])


def expected_outcomes(bad_input) -> dict:
    """Each case's content and what the test expects of it: rows, or the refusal's
    start; the 2 GB line's as the test asserts it."""
    endless = (
        f"{ENDLESS}.csv: line 1: no line end in its first "
        f"{bad_input.loading.MAX_HEADER_BYTES:,} bytes"
    )
    return bad_input.CASES | {ENDLESS: (b"", endless)}


def check(case: str, report: dict, expected, left: tuple[list, int]) -> None:
    """The outcome is the test's, and the database holds what the outcome says."""
    table_rows, ledger_rows = left
    if isinstance(expected, int):
        right = report.get("rows") == expected == len(table_rows)
        right = right and ledger_rows == 1
    else:
        right = report["outcome"].startswith(f"refused: {expected}")
        right = right and "\n" not in report["outcome"] and left == ([], 0)
    if not right:
        raise RuntimeError(
            f"{case}: {report['outcome'][:200]!r}, {len(table_rows)} rows and "
            f"{ledger_rows} ledger rows left; the test expects {expected!r}"
        )


def run_one(bad_input, postgres: services.Postgres, case: str) -> dict:
    """The child of one case, on an empty table of a database of its own (no rows
    nor ledger row of another case); its report, checked."""
    from sqlalchemy import text  # pylint: disable=import-outside-toplevel

    database = f"{DATABASE}_{case.replace('-', '_')}"
    if case == BASELINE:
        return load_in_child(case, postgres.url(database=database))
    content, expected = expected_outcomes(bad_input)[case]
    engine = bad_input.fresh_database(postgres, database)
    try:
        with engine.begin() as connection:
            connection.execute(text(bad_input.CREATE))
        report = load_in_child(case, postgres.url(database=database), content)
        check(case, report, expected, bad_input.table_and_ledger(engine))
    finally:
        engine.dispose()
    return report


def benchmark(bad_input) -> tuple[dict, list]:
    """Start the server, run the baseline and each case once; the figures."""
    cases = [BASELINE, *expected_outcomes(bad_input)]
    rows = []
    with services.running_postgres() as postgres, ThreadPoolExecutor(
        CHILDREN_AT_ONCE
    ) as pool:
        # A child's time is mostly its imports (Prefect's, about 4 s): two at a time
        # nearly halve the run on two cores, and each one's peak RSS stays its own.
        reports = pool.map(functools.partial(run_one, bad_input, postgres), cases)
        baseline = next(reports)
        print_row(BASELINE, baseline, baseline["peak_rss_mb"])
        for case, report in zip(cases[1:], reports):
            rows.append((case, report))
            print_row(case, report, baseline["peak_rss_mb"])
    return baseline, rows


def print_row(case: str, report: dict, baseline_mb: float) -> None:
    """One line of the table."""
    peak = report["peak_rss_mb"]
    print(
        f"{case:24} {report['outcome'][:OUTCOME_CHARS]:{OUTCOME_CHARS}} "
        f"{report['bytes_read']:>13,} {peak:8.1f} {peak / baseline_mb:6.2f}",
        flush=True,
    )


def import_the_test_module():
    """flows/toolkit/tests/test_bad_input.py, imported as pytest would: it defines
    its cases and helpers, and starts nothing."""
    sys.path.insert(0, str(TESTS_DIR))
    # pylint: disable-next=import-outside-toplevel,import-error
    import test_bad_input

    return test_bad_input


def main() -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        run_case(options.child, options.database_url)
        return
    bad_input = import_the_test_module()
    # The tests' conftest gives Prefect a throw-away home (the children's too): this
    # run made it, this run removes it.
    prefect_home = Path(os.environ["PREFECT_HOME"])
    print(
        f"{'case':24} {'outcome':{OUTCOME_CHARS}} {'bytes read':>13} "
        f"{'peak MB':>8} {'ratio':>6}",
        flush=True,
    )
    try:
        baseline, rows = benchmark(bad_input)
    finally:
        if prefect_home.parent == Path(tempfile.gettempdir()) and (
            prefect_home.name.startswith("flows-tests-prefect-home-")
        ):
            shutil.rmtree(prefect_home, ignore_errors=True)
    baseline_mb = baseline["peak_rss_mb"]
    loaded = sum(1 for _, report in rows if "rows" in report)
    print(
        f"cases={len(rows)} loaded={loaded} refused={len(rows) - loaded} "
        f"baseline_rss_mb={baseline_mb:.1f} max_peak_over_baseline="
        f"{max(report['peak_rss_mb'] for _, report in rows) / baseline_mb:.2f}"
    )


if __name__ == "__main__":
    main()
