"""Files a careless or hostile partner could send, loaded into a real PostgreSQL:
each is loaded exactly or refused in one line naming the file, the line and the
reason, with nothing loaded and the ledger unchanged. The peak memory of each load
is printed; a 2 GB line with no line end is refused after reading its first MiB."""

import io
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import fresh_database
from sqlalchemy import text

from toolkit import loading
from toolkit.loading import LoadPlan

pytestmark = pytest.mark.inbound

MODIFIED = datetime(2026, 12, 7, 5, 0, tzinfo=timezone.utc)
FLOWS_DIR = Path(__file__).resolve().parents[2]
CREATE = "CREATE TABLE scores (id integer PRIMARY KEY, student text, score numeric)"
HEADER = b"id,student,score\n"
# (file content, expected rows, or the start of the one line that refuses it)
CASES = {
    "empty": (b"", "empty.csv: the file is empty"),
    "header-only": (HEADER, 0),
    "header-without-line-end": (
        HEADER.rstrip(b"\n"),
        "header-without-line-end.csv: line 1: its only line has no line end",
    ),
    "latin-1-value": (
        HEADER + b"1,ren\xe9,9.5\n",
        'latin-1-value.csv: line 2: invalid byte sequence for encoding "UTF8": 0xe9',
    ),
    "latin-1-header": (
        b"id,\xe9tudiant,score\n1,a,1\n",
        "latin-1-header.csv: line 1: not UTF-8 (byte 0xe9 at byte 4)",
    ),
    "no-final-line-end": (HEADER + b"1,ada,9.5\n2,alan,8", 2),
    "cr-only": (
        HEADER.replace(b"\n", b"\r") + b"1,ada,9.5\r2,alan,8\r",
        "cr-only.csv: line 1: its lines end in CR alone",
    ),
    "nul-byte": (HEADER + b"1,a\x00da,9.5\n", "nul-byte.csv: line 2"),
    "10000-columns": (
        b",".join(f"c{n}".encode() for n in range(10_000)) + b"\n1\n",
        "10000-columns.csv: the header does not match the table's columns "
        "(missing: id, student, score; unknown: c0, c1",
    ),
}


@pytest.fixture
def scores(postgres):
    """An empty scores table in a database of its own."""
    engine = fresh_database(postgres, "bad_input_tests")
    with engine.begin() as connection:
        connection.execute(text(CREATE))
    yield engine
    engine.dispose()


def table_and_ledger(engine) -> tuple[list, int]:
    """(the table's rows, the number of ledger rows)."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM scores ORDER BY id")).all()
        ledger = connection.execute(
            text("SELECT count(*) FROM flows_inbound_ledger")
        ).scalar()
    return rows, ledger


@pytest.mark.parametrize("case", list(CASES))
def test_a_partner_file_is_loaded_exactly_or_refused_in_one_line(scores, case):
    """Each file: the rows it holds, or BadFile in one line naming file, line and
    reason, the table and the ledger as they were."""
    content, expected = CASES[case]
    name = f"{case}.csv"
    listing = loading.Listing("/drop", name, len(content), MODIFIED)
    plan = LoadPlan("scores")
    if isinstance(expected, int):
        outcome = loading.load_stream(scores, io.BytesIO(content), plan, listing)
        rows, ledger = table_and_ledger(scores)
        print(f"\n{case}: loaded {outcome.rows} rows")
        assert outcome.loaded and outcome.rows == expected == len(rows)
        assert ledger == 1
        return
    with pytest.raises(loading.BadFile) as refused:
        loading.load_stream(scores, io.BytesIO(content), plan, listing)
    line = str(refused.value)
    print(f"\n{case}: refused: {line[:200]}")
    assert "\n" not in line and len(line) < 1000
    assert line.startswith(expected) and line.endswith("nothing was loaded")
    assert table_and_ledger(scores) == ([], 0)


ENDLESS_LINE = textwrap.dedent(
    """
    import io, json, sys
    from toolkit.streams import peak_rss_bytes
    from datetime import datetime, timezone
    from sqlalchemy import create_engine
    from toolkit import loading

    class EndlessLine(io.RawIOBase):
        # 2 GB of one line with no line end, made as it is read.
        def __init__(self, size):
            self.left = size
        def readable(self):
            return True
        def readinto(self, buffer):
            size = min(len(buffer), self.left)
            buffer[:size] = b"a" * size
            self.left -= size
            return size

    size = 2 * 1024 ** 3
    source = EndlessLine(size)
    engine = create_engine(sys.argv[1])
    listing = loading.Listing("/drop", "endless.csv", size, datetime.now(timezone.utc))
    try:
        loading.load_stream(engine, source, loading.LoadPlan("scores"), listing)
        outcome = "loaded"
    except loading.BadFile as error:
        outcome = str(error)
    print(json.dumps({
        "outcome": outcome,
        "read_bytes": size - source.left,
        "peak_rss_mb": peak_rss_bytes() / 1024**2,
    }))
    """
)


def test_a_2_gb_line_with_no_line_end_is_refused_in_bounded_memory(scores, postgres):
    """A 2 GB first line: refused after its first MiB, in a process whose peak RSS
    stays that of its imports; the table and the ledger as they were."""
    result = subprocess.run(
        [sys.executable, "-c", ENDLESS_LINE, postgres.url(database="bad_input_tests")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=FLOWS_DIR,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    print(f"\n2 GB line: {found}")
    assert found["outcome"] == (
        "endless.csv: line 1: no line end in its first 1,048,576 bytes: nothing was "
        "loaded"
    )
    assert found["read_bytes"] <= 2 * loading.MAX_HEADER_BYTES
    assert found["peak_rss_mb"] < 400
    assert table_and_ledger(scores) == ([], 0)
