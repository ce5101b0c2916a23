"""S3 as a sink and a drop folder, against moto's real S3 server on 127.0.0.1.

Every delivery task writes to S3Sink the bytes it writes to a local folder. Faults
are real: a TCP proxy in front of the server cuts an upload's connection, or answers
a request `503 SlowDown` as a throttling store does; a moto server of this module's
own checks keys and policies, and refuses a write with AccessDenied.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import botocore.session
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
import pandas as pd
import pytest
from conftest import serve
from fault_proxy import FaultProxy
from guide_snippets import guide_module
from prefect.blocks.system import Secret
from test_faults import QUICK_RETRIES, SLOW_RETRIES, run_in_a_flow

import services
from toolkit import connections, delivery, object_storage, retries
from toolkit.database import DatabaseConnection
from toolkit.mail import frame_as_csv
from toolkit.object_storage import S3Connection, S3DropFolder, S3Sink
from toolkit.pickup import LocalDropFolder

pytestmark = pytest.mark.s3

REPOSITORY_DIR = Path(__file__).resolve().parents[3]
# About 77 bytes a row: 2,700,000 rows make a CSV of about 208 MB.
BIG_ROWS = 2_700_000
ROWS_QUERY = """
SELECT g AS id, md5(g::text) AS token, g * 0.25 AS amount,
       timestamp '2024-01-01' + g * interval '1 second' AS happened
FROM generate_series(1, :rows) AS g
"""
# 20 MB of CSV: four parts of 5 MiB, so that a cut lands between the first and last.
ORDERS = pd.DataFrame(
    {
        "order_id": range(1, 400_001),
        "customer": ["acme", "globex", "initech", "umbrella"] * 100_000,
        "note": ["a note of some thirty characters"] * 400_000,
    }
)
SMALL = pd.DataFrame({"id": [1, 2, 3], "name": ["ann", "bob, jr.", None]})
PART_MEBIBYTES = 5  # S3's smallest: more parts for the same bytes


def s3_connection(bucket, endpoint_url: str | None = None, **overrides):
    """An unsaved S3Connection to the test's bucket, keys in Secret blocks."""
    settings = {
        "bucket": bucket.bucket,
        "prefix": "partner/outgoing",
        "endpoint_url": endpoint_url or bucket.endpoint_url,
        "access_key_id": Secret(value=bucket.access_key_id),
        "secret_access_key": Secret(value=bucket.secret_access_key),
        "part_mebibytes": PART_MEBIBYTES,
        "timeout_seconds": 10,
    }
    return S3Connection(**{**settings, **overrides})


def object_bytes(connection: S3Connection, name: str) -> bytes:
    """The object's bytes, read with a client of its own."""
    answer = connection.client().get_object(
        Bucket=connection.bucket, Key=connection.key(name)
    )
    return answer["Body"].read()


def keys_and_uploads(connection: S3Connection) -> tuple[list[str], list[str]]:
    """Every key in the bucket, and every multipart upload not completed nor aborted."""
    client = connection.client()
    listed = client.list_objects_v2(Bucket=connection.bucket)
    uploads = client.list_multipart_uploads(Bucket=connection.bucket)
    return (
        sorted(entry["Key"] for entry in listed.get("Contents", [])),
        [upload["Key"] for upload in uploads.get("Uploads", [])],
    )


@pytest.fixture
def connection(s3_bucket):
    """An S3Connection to a fresh bucket of the session's moto server."""
    return s3_connection(s3_bucket)


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("path", ["frame", "chunks", "as_is"])
def test_every_delivery_task_writes_to_s3_what_it_writes_to_a_folder(
    path, connection, postgres, tmp_path
):
    """deliver_frame, deliver_query_in_chunks and deliver_query_as_is write to S3Sink
    unchanged: the object holds the bytes a local folder gets, no upload is left."""
    source = DatabaseConnection(url=postgres.url())
    local = delivery.LocalFolderSink(str(tmp_path))
    sink = S3Sink(connection)
    parameters = {"rows": 200_000}
    for target, name in ((local, "orders.csv"), (sink, "orders.csv")):
        if path == "frame":
            delivery.deliver_frame.fn(target, ORDERS, name)
        elif path == "chunks":
            delivery.deliver_query_in_chunks.fn(
                source, ROWS_QUERY, target, name, parameters=parameters
            )
        else:
            delivery.deliver_query_as_is.fn(
                source, ROWS_QUERY, target, name, parameters=parameters
            )
    expected = (tmp_path / "orders.csv").read_bytes()
    assert len(expected) > 2 * PART_MEBIBYTES * 2**20  # three parts or more
    assert object_bytes(connection, "orders.csv") == expected
    assert keys_and_uploads(connection) == (["partner/outgoing/orders.csv"], [])


@pytest.mark.usefixtures("prefect_api_url")
def test_a_small_and_an_empty_file_are_one_put_each(connection):
    """A file smaller than a part is put in one request; an empty frame gives its
    header only."""
    sink = S3Sink(connection)
    report = delivery.deliver_frame.fn(sink, SMALL, "small.csv")
    delivery.deliver_frame.fn(sink, SMALL.iloc[0:0], "empty.csv")
    assert object_bytes(connection, "small.csv") == (
        b'id,name\n1,"ann"\n2,"bob, jr."\n3,\n'
    )
    assert object_bytes(connection, "empty.csv") == b"id,name\n"
    assert report.location == (f"s3://{connection.bucket}/partner/outgoing/small.csv")
    assert keys_and_uploads(connection)[1] == []


# The child process of the memory test: one delivery, then its own figures as JSON.
DELIVER_AND_MEASURE = textwrap.dedent(
    """
    import json, os, sys, time
    from toolkit.streams import peak_rss_bytes
    from prefect.blocks.system import Secret
    from toolkit import delivery
    from toolkit.database import DatabaseConnection
    from toolkit.object_storage import S3Connection, S3Sink

    # What the imports alone hold (Prefect, pandas, Arrow, botocore): the baseline.
    imported_rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    settings = json.loads(os.environ["DELIVERY_SETTINGS"])
    if settings["sink"] == "s3":
        connection = S3Connection(
            bucket=settings["bucket"], prefix="big", endpoint_url=settings["endpoint"],
            access_key_id=Secret(value=settings["key_id"]),
            secret_access_key=Secret(value=os.environ["DELIVERY_SECRET"]),
        )
        sink = S3Sink(connection)
    else:
        sink = delivery.LocalFolderSink(settings["folder"])
    source = DatabaseConnection(url=os.environ["DELIVERY_DATABASE"])
    started = time.monotonic()
    report = delivery.deliver_query_as_is.fn(
        source, settings["query"], sink, "big.csv", parameters={"rows": settings["rows"]}
    )
    print(json.dumps({
        "seconds": time.monotonic() - started,
        "bytes": report.bytes,
        "peak_rss": peak_rss_bytes(),
        "imported_rss": imported_rss,
    }))
    """
)


def deliver_in_a_child(settings: dict, database_url: str, secret: str) -> dict:
    """Run one 200 MB delivery in a process of its own; its time, bytes, peak RSS."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY_DIR / "flows"),
        "DELIVERY_SETTINGS": json.dumps({**settings, "query": ROWS_QUERY}),
        "DELIVERY_DATABASE": database_url,
        "DELIVERY_SECRET": secret,
    }
    completed = subprocess.run(
        [sys.executable, "-c", DELIVER_AND_MEASURE],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_200_mb_delivery_holds_a_few_parts_in_memory(s3_bucket, postgres, tmp_path):
    """200 MB from PostgreSQL to S3: the peak RSS is what a delivery of the same rows
    to a local folder peaks at, plus a few parts, and what a quarter of the rows
    peaks at: memory does not grow with the file."""
    s3 = {
        "sink": "s3",
        "bucket": s3_bucket.bucket,
        "endpoint": s3_bucket.endpoint_url,
        "key_id": s3_bucket.access_key_id,
    }
    runs = {
        name: deliver_in_a_child(
            {**settings, "rows": rows}, postgres.url(), s3_bucket.secret_access_key
        )
        for name, settings, rows in (
            ("local", {"sink": "local", "folder": str(tmp_path)}, BIG_ROWS),
            ("s3, a quarter", s3, BIG_ROWS // 4),
            ("s3", s3, BIG_ROWS),  # last: the object checked below is its
        )
    }
    mib = 2**20
    for name, run in runs.items():
        over_imports = (run["peak_rss"] - run["imported_rss"]) / mib
        print(
            f"\n{run['bytes'] / 1e6:.1f} MB to {name}: {run['seconds']:.1f} s, peak RSS"
            f" {run['peak_rss'] / mib:.0f} MiB ({over_imports:.0f} MiB over the imports)"
        )
    remote, local, quarter = runs["s3"], runs["local"], runs["s3, a quarter"]
    assert remote["bytes"] == local["bytes"] > 200_000_000
    assert quarter["bytes"] < remote["bytes"] / 3.9
    # botocore's client (its S3 model) and parts of 8 MiB: filled, sent, copied.
    figures = f"{runs}"
    assert remote["peak_rss"] - local["peak_rss"] < 8 * 8 * mib, figures
    # Four times the bytes, about the same peak: bounded, not a share of the file.
    assert remote["peak_rss"] - quarter["peak_rss"] < 4 * 8 * mib, figures
    connection = s3_connection(s3_bucket, prefix="big")
    head = connection.client().head_object(Bucket=s3_bucket.bucket, Key="big/big.csv")
    assert head["ContentLength"] == remote["bytes"]
    assert keys_and_uploads(connection)[1] == []


@pytest.mark.usefixtures("prefect_api_url")
def test_an_upload_cut_midway_is_aborted_then_retried_whole(
    fault, s3_bucket, s3_server
):
    """The connection is cut after 12 MB of a 20 MB upload: the upload is aborted (no
    part left), the task runs again and the object is whole, byte for byte."""
    fault.expect("recovered")
    fault.secret(s3_bucket.secret_access_key)
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    with FaultProxy(port, cut_after_bytes=12 * 2**20) as proxy:
        # One try per request: the cut reaches the task, as it does once botocore's
        # own tries are spent.
        connection = s3_connection(s3_bucket, proxy.url, request_attempts=1)
        flow_state, _, run_count = run_in_a_flow(
            delivery.deliver_frame.with_options(**QUICK_RETRIES),
            S3Sink(connection),
            ORDERS,
            "orders.csv",
        )
    assert proxy.cut == 1
    assert flow_state.is_completed() and run_count == 2
    print(f"\nupload cut midway: the task took {run_count} attempts")
    direct = s3_connection(s3_bucket)
    expected = local_bytes(ORDERS)
    assert object_bytes(direct, "orders.csv") == expected
    assert keys_and_uploads(direct) == (["partner/outgoing/orders.csv"], [])


@pytest.mark.usefixtures("prefect_api_url")
def test_an_upload_cut_on_every_try_leaves_no_object_and_no_part(
    fault, s3_bucket, s3_server
):
    """Every try is cut midway: the task fails, no object is at the key and no part
    of any try is left (list_multipart_uploads is empty)."""
    fault.expect("failed clean")
    fault.secret(s3_bucket.secret_access_key)
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    with FaultProxy(port, cut_after_bytes=8 * 2**20, cuts=10) as proxy:
        connection = s3_connection(s3_bucket, proxy.url, request_attempts=1)
        flow_state, _, run_count = run_in_a_flow(
            delivery.deliver_frame.with_options(**{**QUICK_RETRIES, "retries": 1}),
            S3Sink(connection),
            ORDERS,
            "orders.csv",
        )
    assert flow_state.is_failed() and run_count == 2 and proxy.cut == 2
    assert keys_and_uploads(s3_connection(s3_bucket)) == ([], [])


def local_bytes(frame: pd.DataFrame) -> bytes:
    """The CSV a delivery of `frame` writes."""
    return frame_as_csv(frame)


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize(
    "request_attempts, task_attempts", [(1, 2), (3, 1)], ids=["task", "in-place"]
)
def test_a_throttled_request_is_retried(
    fault, s3_bucket, s3_server, request_attempts, task_attempts
):
    """The store answers the first request `503 SlowDown`: botocore tries it again in
    place while it has tries; with one try per request, the task runs again."""
    fault.expect("recovered")
    fault.secret(s3_bucket.secret_access_key)
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    with FaultProxy(port, throttle=1) as proxy:
        connection = s3_connection(
            s3_bucket, proxy.url, request_attempts=request_attempts
        )
        flow_state, _, run_count = run_in_a_flow(
            delivery.deliver_frame.with_options(**QUICK_RETRIES),
            S3Sink(connection),
            SMALL,
            "small.csv",
        )
    print(
        f"\nthrottled (503 SlowDown) once, {request_attempts} tries a request: "
        f"the task took {run_count} attempts"
    )
    assert proxy.throttled == 1
    assert flow_state.is_completed() and run_count == task_attempts
    assert object_bytes(s3_connection(s3_bucket), "small.csv").startswith(b"id,name\n")


@pytest.fixture(scope="module")
def checking_s3_server():
    """A moto server of this module's own that checks every request's key and its
    IAM policy, after the first INITIAL_NO_AUTH_ACTION_COUNT requests (the set-up)."""
    yield from serve(running_checking_s3_server)


@contextlib.contextmanager
def running_checking_s3_server():
    """moto_server with INITIAL_NO_AUTH_ACTION_COUNT: its set-up requests are free."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        raise services.ServiceUnavailable(
            f"moto_server is not installed ({executable})"
        )
    port = services.free_port()
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [str(executable), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)},
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


# create_user, create_access_key, put_user_policy, create_bucket.
SETUP_REQUESTS = 4
# The S3 reads of AWS's managed policy AmazonS3ReadOnlyAccess: no write matches.
# Wildcards, as AWS's own: moto 5.2.6 checks a request against its API operation's
# name (s3:ListObjectsV2), moto 5.2.5 and AWS against IAM's (s3:ListBucket).
READ_ONLY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:Get*", "s3:List*"],
            "Resource": "*",
        }
    ],
}


def wait_for_port(port: int, process) -> None:
    """Wait until the server accepts connections (a TCP connect costs it no request)."""
    deadline = time.monotonic() + services.START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise services.ServiceUnavailable("moto_server exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise services.ServiceUnavailable("moto_server did not listen")


@pytest.mark.usefixtures("prefect_api_url")
def test_access_denied_is_tried_once(fault, checking_s3_server):
    """A key whose policy allows reading only: the write is refused (AccessDenied, 403),
    the task fails at once, and nothing is at the key."""
    fault.expect("failed clean")
    admin = {
        "region_name": "us-east-1",
        "endpoint_url": checking_s3_server,
        "aws_access_key_id": "AKIASETUP00000000000",
        "aws_secret_access_key": "set-up-only",
    }
    session = botocore.session.get_session()
    iam = session.create_client("iam", **admin)
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    fault.secret(key["SecretAccessKey"])
    iam.put_user_policy(
        UserName="reader",
        PolicyName="read-only",
        PolicyDocument=json.dumps(READ_ONLY_POLICY),
    )
    session.create_client("s3", **admin).create_bucket(Bucket="read-only-bucket")
    connection = S3Connection(
        bucket="read-only-bucket",
        endpoint_url=checking_s3_server,
        access_key_id=Secret(value=key["AccessKeyId"]),
        secret_access_key=Secret(value=key["SecretAccessKey"]),
    )
    assert S3DropFolder(connection).list_files("*") == []  # the key itself works
    flow_state, task_state, run_count = run_in_a_flow(
        delivery.deliver_frame.with_options(**SLOW_RETRIES),
        S3Sink(connection),
        SMALL,
        "small.csv",
    )
    print(f"\naccess denied: the task took {run_count} attempt")
    assert flow_state.is_failed() and run_count == 1
    assert "AccessDenied" in str(task_state.result(raise_on_failure=False))
    assert S3DropFolder(connection).list_files("*") == []


@pytest.mark.usefixtures("prefect_api_url")
def test_a_missing_bucket_is_tried_once(fault, s3_bucket):
    """A bucket that does not exist: NoSuchBucket, the task fails at once."""
    fault.expect("failed clean")
    fault.secret(s3_bucket.secret_access_key)
    connection = s3_connection(s3_bucket)
    connection.bucket = "no-such-bucket-anywhere"
    flow_state, task_state, run_count = run_in_a_flow(
        delivery.deliver_frame.with_options(**SLOW_RETRIES),
        S3Sink(connection),
        SMALL,
        "small.csv",
    )
    print(f"\nmissing bucket: the task took {run_count} attempt")
    assert flow_state.is_failed() and run_count == 1
    assert "NoSuchBucket" in str(task_state.result(raise_on_failure=False))


@pytest.mark.usefixtures("prefect_api_url")
def test_the_drop_folder_lists_streams_and_moves_objects(connection):
    """Objects directly below the prefix are listed with size and last-modified time
    (UTC); one is streamed in pieces; a move copies then deletes, never overwrites."""
    client = connection.client()
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    big = os.urandom(3 * 2**20)
    for name, body in {
        "orders_1.csv": big,
        "orders_2.csv": b"id\n2\n",
        "readme.txt": b"not a csv\n",
        "processed/orders_0.csv": b"id\n0\n",
    }.items():
        client.put_object(Bucket=connection.bucket, Key=connection.key(name), Body=body)
    folder = S3DropFolder(connection)
    assert folder.describe() == f"s3://{connection.bucket}/partner/outgoing"

    listed = folder.list_files("*.csv")
    assert [(f.name, f.size) for f in listed] == [
        ("orders_1.csv", len(big)),
        ("orders_2.csv", 5),
    ]
    for dropped in listed:
        assert dropped.modified.tzinfo == timezone.utc
        assert before <= dropped.modified <= datetime.now(timezone.utc)
    with folder.open_file("orders_1.csv") as reader:
        pieces = list(iter(lambda: reader.read(1 << 20), b""))
    assert b"".join(pieces) == big and len(pieces) >= 3

    folder.move("orders_1.csv", "processed/2026-12-02/orders_1.csv")
    assert not folder.exists("orders_1.csv")
    assert folder.exists("processed/2026-12-02/orders_1.csv")
    assert object_bytes(connection, "processed/2026-12-02/orders_1.csv") == big
    with pytest.raises(FileExistsError):
        folder.move("orders_2.csv", "processed/orders_0.csv")
    assert object_bytes(connection, "processed/orders_0.csv") == b"id\n0\n"
    assert folder.exists("orders_2.csv")
    folder.remove("orders_2.csv")
    assert [f.name for f in folder.list_files("*")] == ["readme.txt"]
    with pytest.raises(FileNotFoundError):
        folder.open_file("orders_2.csv")


@pytest.mark.usefixtures("prefect_api_url")
def test_a_young_upload_of_the_key_is_left_and_a_stale_one_aborted(
    connection, monkeypatch
):
    """An unfinished upload of the same key younger than STALE_UPLOAD_HOURS may be
    another run's, still under way: a delivery completes and leaves it. One older
    is a killed run's, and the next delivery aborts it. (moto reports every upload
    as begun on 2010-11-10: a limit of a century makes it young.)"""
    client = connection.client()
    target = {"Bucket": connection.bucket, "Key": connection.key("small.csv")}
    other = client.create_multipart_upload(**target)["UploadId"]
    monkeypatch.setattr(object_storage, "STALE_UPLOAD_HOURS", 100 * 365 * 24)
    flow_state, _, _ = run_in_a_flow(
        delivery.deliver_frame, S3Sink(connection), SMALL, "small.csv"
    )
    assert flow_state.is_completed()
    assert keys_and_uploads(connection) == ([target["Key"]], [target["Key"]])
    monkeypatch.setattr(object_storage, "STALE_UPLOAD_HOURS", 24)
    flow_state, _, _ = run_in_a_flow(
        delivery.deliver_frame, S3Sink(connection), SMALL, "small.csv"
    )
    assert flow_state.is_completed()
    assert keys_and_uploads(connection) == ([target["Key"]], [])
    with pytest.raises(ClientError):
        client.abort_multipart_upload(**target, UploadId=other)


def test_an_object_over_one_copys_limit_moves_in_parts(connection, monkeypatch):
    """Above SINGLE_COPY_MAX_BYTES (5 GB on S3, 5 MiB here) a move copies part by
    part, each part asking for the version first seen: the object arrives whole
    (its ETag tells of 3 parts), the source is gone, and folders list as such."""
    monkeypatch.setattr(object_storage, "SINGLE_COPY_MAX_BYTES", 5 * 2**20)
    monkeypatch.setattr(object_storage, "COPY_PART_BYTES", 5 * 2**20)
    client = connection.client()
    body = os.urandom(12 * 2**20)
    client.put_object(
        Bucket=connection.bucket, Key=connection.key("big.csv"), Body=body
    )
    folder = S3DropFolder(connection)
    folder.take("big.csv", "claimed/run-a/big.csv")
    assert folder.list_folders("claimed") == ["run-a"]
    assert folder.file_info("claimed/run-a/big.csv").size == len(body)
    folder.move("claimed/run-a/big.csv", "processed/big.csv")
    assert object_bytes(connection, "processed/big.csv") == body
    head = client.head_object(
        Bucket=connection.bucket, Key=connection.key("processed/big.csv")
    )
    assert head["ETag"].strip('"').endswith("-3")
    assert folder.file_info("big.csv") is None
    assert folder.list_files("*", "claimed/run-a") == []
    with pytest.raises(FileNotFoundError):
        folder.take("big.csv", "claimed/run-b/big.csv")


@pytest.mark.usefixtures("prefect_api_url")
def test_dev_without_an_s3_block_uses_a_local_folder(tmp_path, monkeypatch):
    """env=dev and no `<system>-s3-dev` block: the sink and the drop folder are local
    folders; env=main without a block is one line naming the setup command."""
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path))
    sink = connections.s3_sink_for("nosuchsystem", "dev")
    assert sink == delivery.LocalFolderSink(str(tmp_path / "dev"))
    folder = connections.s3_drop_folder_for("nosuchsystem", "dev", "incoming")
    assert isinstance(folder, LocalDropFolder)
    assert folder.describe() == str(tmp_path / "dev" / "incoming")
    with pytest.raises(ValueError) as refused:
        connections.s3_sink_for("nosuchsystem", "main")
    assert str(refused.value) == (
        "no Flows S3 Connection block named 'nosuchsystem-s3-main': create it with "
        "`python3 flows/util.py setup --env main --s3 nosuchsystem`"
    )


@pytest.mark.usefixtures("prefect_api_url")
def test_a_saved_s3_block_is_the_one_a_flow_gets(connection):
    """With `<system>-s3-main` saved, a flow's sink and drop folder are S3's."""
    connection.save("warehouse-s3-main", overwrite=True)
    sink = connections.s3_sink_for("warehouse", "main")
    assert isinstance(sink, S3Sink)
    assert sink.describe("x.csv") == connection.describe("x.csv")
    folder = connections.s3_drop_folder_for("warehouse", "main", "incoming")
    assert folder.describe() == connection.describe("incoming")


@pytest.mark.usefixtures("prefect_api_url")
def test_the_guides_s3_flow_runs(connection, tmp_path, monkeypatch):
    """The guide's S3 snippet, as a flow run: with block lake-s3-dev it delivers to
    the bucket and lists the drop folder; without it, both are local folders."""
    flow_module = guide_module("sources-and-sinks.md", "share_enrolment.py", tmp_path)
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "output"))
    assert flow_module.share_enrolment(env="dev") == []
    assert (tmp_path / "output" / "dev" / "enrolment" / "totals.csv").exists()

    connection.save("lake-s3-dev", overwrite=True)
    client = connection.client()
    client.put_object(
        Bucket=connection.bucket, Key=connection.key("incoming/a.csv"), Body=b"x\n"
    )
    assert flow_module.share_enrolment(env="dev") == ["a.csv"]
    assert object_bytes(connection, "enrolment/totals.csv") == (
        b'school,students\n"arts",1204\n"science",987\n'
    )


def client_error(code: str, status: int) -> ClientError:
    """An S3 answer as botocore raises it."""
    response = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    "error, transient",
    [
        (client_error("SlowDown", 503), True),
        (client_error("ServiceUnavailable", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("RequestTimeout", 400), True),
        (client_error("AccessDenied", 403), False),
        (client_error("InvalidAccessKeyId", 403), False),
        (client_error("NoSuchBucket", 404), False),
        (client_error("EntityTooSmall", 400), False),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (ConnectionClosedError(endpoint_url="http://127.0.0.1:1"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (NoCredentialsError(), False),
    ],
)
def test_s3_errors_are_classified(error, transient):
    """Throttling, a store's own trouble and the network are transient; refusals not."""
    assert retries.is_transient(error) is transient
