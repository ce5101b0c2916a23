"""From a real PostgreSQL (or SQLite) to a real sshd (or a folder): exact files."""

import asyncio
import datetime
import logging
import os
import re
import time

import pandas as pd
import pytest
from conftest import fresh_database, sftp_connection_to
from sqlalchemy import create_engine, text

from toolkit import database
from toolkit import delivery

CREATE_EVENTS = """
CREATE TABLE events (
    id integer, happened timestamp, amount numeric(8, 2), done boolean,
    note text, day date
)
"""
EVENTS = [
    (1, "2024-01-01 08:00:00", "12.50", True, "plain", "2024-01-01"),
    (2, "2024-01-02 09:30:15", "-3.25", False, 'comma, "quote"', "2024-01-02"),
    (3, None, None, None, "", None),
    (4, "2024-01-03 23:59:59", "0.10", True, None, "2024-01-03"),
]
# Strings and booleans as each path writes them; numbers and times the same in both.
EXPECTED_CHUNKED_CSV = (
    "id,happened,amount,done,note,day,amount_in_cents\n"
    '1,2024-01-01 08:00:00.000000,12.50,true,"plain",2024-01-01,1250\n'
    '2,2024-01-02 09:30:15.000000,-3.25,false,"comma, ""quote""",2024-01-02,-325\n'
    '3,,,,"",,\n'
    "4,2024-01-03 23:59:59.000000,0.10,true,,2024-01-03,10\n"
)
EXPECTED_COPY_CSV = (
    "id,happened,amount,done,note,day\n"
    "1,2024-01-01 08:00:00.000000,12.50,t,plain,2024-01-01\n"
    '2,2024-01-02 09:30:15.000000,-3.25,f,"comma, ""quote""",2024-01-02\n'
    '3,,,,"",\n'
    "4,2024-01-03 23:59:59.000000,0.10,t,,2024-01-03\n"
)
QUERY = "SELECT * FROM events WHERE id <= :last ORDER BY id"
# Rows that PostgreSQL makes slowly (a pause every `every` rows), sent as it makes them.
SLOW_QUERY = """
SELECT g AS id, md5(g::text) AS token,
       CASE WHEN g % :every = 0 THEN pg_sleep(:pause)::text END AS pause
FROM generate_series(1, :rows) AS g
"""
SLOW_ROWS = {"rows": 200_000, "every": 20_000, "pause": 0.1}
PROGRESS_LINE = re.compile(
    r"^(?P<file>\S+): (?:(?P<rows>[\d,]+) rows, )?(?P<mb>[\d.,]+) MB so far"
    r"(?P<bytes_only> \(rows are counted at the end\))?, [\d.,]+ MB/s, [\d.,]+ s$"
)


@pytest.fixture
def events_database(postgres):
    """A table of awkward values in a database of this test's own."""
    engine = fresh_database(postgres, "events_test")
    with engine.begin() as connection:
        connection.execute(text(CREATE_EVENTS))
        connection.execute(
            text("INSERT INTO events VALUES (:i, :h, :a, :d, :n, :y)"),
            [dict(zip("ihadny", row)) for row in EVENTS],
        )
    yield engine
    engine.dispose()


def add_cents(frame: pd.DataFrame) -> pd.DataFrame:
    """A row-wise shaping step, as users write them."""
    return frame.assign(amount_in_cents=(frame["amount"] * 100).round().astype("Int64"))


def test_postgres_types_arrive_as_pandas_types(events_database):
    """Integers, timestamps, exact numerics, booleans, dates; NULL is missing, '' is
    ''."""
    [frame] = list(database.iterate_query_frames(events_database, QUERY, {"last": 4}))
    assert frame["id"].dtype == "int64"
    assert frame["happened"].iloc[1] == pd.Timestamp("2024-01-02 09:30:15")
    assert [str(amount) for amount in frame["amount"][:2]] == ["12.50", "-3.25"]
    assert frame["done"].tolist()[:2] == [True, False]
    assert frame["day"].iloc[0] == datetime.date(2024, 1, 1)
    assert frame["note"].iloc[2] == "" and frame["note"].iloc[3] is None


def test_chunked_delivery_over_sftp_is_exact(events_database, sshd, tmp_path):
    """Shaped chunk by chunk, delivered as one CSV with one header."""
    sink = delivery.SftpSink(sftp_connection_to(sshd, str(tmp_path / "partner")))
    report = delivery.deliver_query_in_chunks.fn(
        events_database,
        QUERY,
        sink,
        "events.csv",
        parameters={"last": 4},
        transform=add_cents,
        chunk_rows=3,
    )
    delivered = (tmp_path / "partner" / "events.csv").read_text()
    assert delivered == EXPECTED_CHUNKED_CSV
    assert (report.rows, report.bytes) == (4, len(EXPECTED_CHUNKED_CSV))


def test_fast_path_over_sftp_is_the_databases_own_csv(events_database, sshd, tmp_path):
    """No DataFrame: PostgreSQL's COPY output, byte for byte, at the final name."""
    sink = delivery.SftpSink(sftp_connection_to(sshd, str(tmp_path / "partner")))
    report = delivery.deliver_query_as_is.fn(
        events_database, QUERY, sink, "events.csv", parameters={"last": 4}
    )
    assert (tmp_path / "partner" / "events.csv").read_text() == EXPECTED_COPY_CSV
    assert report.rows == 4
    assert report.location.startswith(f"sftp://{sshd.user}@127.0.0.1:{sshd.port}/")


def test_sqlite_chunks_into_a_local_folder(tmp_path):
    """The generic path (no COPY) writes the same kind of file to a folder."""
    engine = create_engine(f"sqlite:///{tmp_path / 'small.sqlite'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER, name TEXT)"))
        connection.execute(
            text("INSERT INTO t VALUES (:i, :n)"),
            [{"i": i, "n": f"n{i}"} for i in range(5)],
        )
    sink = delivery.LocalFolderSink(str(tmp_path / "out"))
    delivery.deliver_query_in_chunks.fn(
        engine, "SELECT * FROM t ORDER BY id", sink, "t.csv", chunk_rows=2
    )
    expected = "id,name\n" + "".join(f'{i},"n{i}"\n' for i in range(5))
    assert (tmp_path / "out" / "t.csv").read_text() == expected


@pytest.mark.parametrize("sink_kind", ["local", "sftp"])
def test_failure_mid_stream_leaves_no_file(
    events_database, sink_kind, tmp_path, request
):
    """A transform that fails on the second chunk: nothing at the final name."""
    folder = tmp_path / "partner"
    if sink_kind == "local":
        sink = delivery.LocalFolderSink(str(folder))
    else:
        sshd = request.getfixturevalue("sshd")
        sink = delivery.SftpSink(sftp_connection_to(sshd, str(folder)))
    calls = []

    def fail_on_second_chunk(frame):
        calls.append(len(frame))
        if len(calls) == 2:
            raise ValueError("bad row")
        return frame

    with pytest.raises(ValueError, match="bad row"):
        delivery.deliver_query_in_chunks.fn(
            events_database,
            QUERY,
            sink,
            "events.csv",
            parameters={"last": 4},
            transform=fail_on_second_chunk,
            chunk_rows=2,
        )
    assert calls == [2, 2]
    assert not folder.exists() or os.listdir(folder) == []


def flows_log_lines(caplog) -> list[str]:
    """The toolkit's log lines outside a run (run_logger's `flows` logger)."""
    return [r.getMessage() for r in caplog.records if r.name == "flows"]


def test_fast_path_logs_megabytes_while_postgres_writes(
    events_database, sshd, tmp_path, caplog
):
    """A slow COPY to SFTP: lines every 0.2 s in MB (its rows come at the end), then
    the final line with the rows and the size the server checked."""
    caplog.set_level(logging.INFO, logger="flows")
    sink = delivery.SftpSink(sftp_connection_to(sshd, str(tmp_path / "partner")))
    report = delivery.deliver_query_as_is.fn(
        events_database,
        SLOW_QUERY,
        sink,
        "slow.csv",
        parameters=SLOW_ROWS,
        progress_seconds=0.2,
    )
    *progress, final = flows_log_lines(caplog)
    assert len(progress) >= 3, progress
    matches = [PROGRESS_LINE.match(line) for line in progress]
    assert all(match and match["bytes_only"] for match in matches), progress
    megabytes = [float(match["mb"].replace(",", "")) for match in matches]
    # The lines round to a tenth of a MB: the last may round up past the file's size.
    shown_size = round(report.bytes / 1e6, 1)
    assert megabytes == sorted(megabytes) and 0 < megabytes[-1] <= shown_size
    assert final.startswith("delivered slow.csv: 200,000 rows, ")
    assert "size checked on the server" in final
    assert (
        report.checked_size
        == report.bytes
        == (tmp_path / "partner" / "slow.csv").stat().st_size
    )
    assert report.seconds >= 1.0


def test_chunked_progress_counts_rows(events_database, tmp_path, caplog):
    """Chunks shaped slowly: every line says the rows so far, and they grow."""
    caplog.set_level(logging.INFO, logger="flows")
    sink = delivery.LocalFolderSink(str(tmp_path / "out"))

    def slow_transform(frame):
        time.sleep(0.1)
        return frame

    report = delivery.deliver_query_in_chunks.fn(
        events_database,
        SLOW_QUERY,
        sink,
        "chunks.csv",
        parameters={**SLOW_ROWS, "pause": 0},
        transform=slow_transform,
        chunk_rows=20_000,
        progress_seconds=0.2,
    )
    *progress, final = flows_log_lines(caplog)
    assert len(progress) >= 3, progress
    rows = [
        int(PROGRESS_LINE.match(line)["rows"].replace(",", "")) for line in progress
    ]
    assert rows == sorted(rows) and rows[-1] > rows[0] and rows[-1] <= 200_000
    assert final.startswith("delivered chunks.csv: 200,000 rows, ")
    assert report.checked_size is None  # a local folder checks nothing


def test_fast_file_gets_the_final_line_only(tmp_path, caplog):
    """With the default interval a small file logs one line: the delivered one."""
    caplog.set_level(logging.INFO, logger="flows")
    sink = delivery.LocalFolderSink(str(tmp_path / "out"))
    frame = pd.DataFrame({"id": range(100_000), "name": "x" * 40})
    report = delivery.deliver_frame.fn(sink, frame, "fast.csv")
    assert report.seconds < 5
    [line] = flows_log_lines(caplog)
    assert line.startswith("delivered fast.csv: 100,000 rows, ")
    assert f"({report.bytes} bytes)" in line and line.endswith(f"to {report.location}")


async def read_artifacts():
    """Every artifact on the session's server."""
    # pylint: disable-next=import-outside-toplevel
    from prefect import get_client

    async with get_client() as client:
        return await client.read_artifacts()


@pytest.mark.usefixtures("prefect_api_url")
def test_no_artifact_outside_a_run(tmp_path):
    """Scripts and benchmarks call the tasks' functions: no artifact, no error."""
    before = {artifact.id for artifact in asyncio.run(read_artifacts())}
    sink = delivery.LocalFolderSink(str(tmp_path / "out"))
    report = delivery.deliver_frame.fn(sink, pd.DataFrame({"a": [1]}), "outside.csv")
    assert delivery.summarize_deliveries([report], key="outside-a-run") is None
    after = {artifact.id for artifact in asyncio.run(read_artifacts())}
    assert after == before
