"""Windows file shares against a real smbd (Samba) on 127.0.0.1, signing required:
a delivery appears whole, its size checked; the drop folder lists, streams, claims
and moves, and a pick-up from a share loads once; a wrong password and a share that
refuses writes fail at once, in one line, the password never shown; smbd killed
mid-upload and mid-download: the task's retry delivers or loads the file whole."""

import os
import threading
import time

import pandas as pd
import pytest
from conftest import files_under, serve
from prefect.blocks.system import Secret
from test_faults import QUICK_RETRIES, SLOW_RETRIES, run_in_a_flow
from test_inbound import ids_in, inbound_run, orders_target

import services
from toolkit import delivery
from toolkit.inbound import PickupRules
from toolkit.mail import frame_as_csv
from toolkit.loading import LoadPlan
from toolkit.smb import SmbConnection, SmbDropFolder, SmbSink

pytestmark = [pytest.mark.smb, pytest.mark.usefixtures("prefect_api_url")]

FRAME = pd.DataFrame({"id": [1, 2, 3], "name": ["ann", "bob, jr.", None]})
# About 40 MB of CSV: an upload or a download long enough to be cut.
LARGE_ROWS = 1_000_000


@pytest.fixture(scope="module")
def smbd():
    """A real smbd for the module's tests that do not stop it."""
    yield from serve(services.running_smbd)


@pytest.fixture
def own_smbd():
    """A real smbd of the test's own, which it kills and starts again."""
    yield from serve(services.running_smbd)


def connection_to(server, password: str | None = None, **fields) -> SmbConnection:
    """A block of the server's share, as `setup --smb` makes one."""
    return SmbConnection(
        host="127.0.0.1",
        port=server.port,
        share=server.share,
        username=server.user,
        password=Secret(value=password or server.password),
        timeout_seconds=5,
        **fields,
    )


def test_a_delivered_file_appears_whole_with_no_temporary_left(smbd):
    """deliver_frame into a folder of the share: the file's bytes are the CSV's,
    its size was checked on the server, and no temporary name is left."""
    sink = SmbSink(connection_to(smbd, remote_dir="exports"))
    report = delivery.deliver_frame.fn(sink, FRAME, "daily/people.csv")
    written = smbd.share_dir / "exports" / "daily" / "people.csv"
    assert written.read_bytes() == frame_as_csv(FRAME)
    assert report.bytes == written.stat().st_size
    assert (
        report.location == f"smb://127.0.0.1:{smbd.port}/drop/exports/daily/people.csv"
    )
    assert files_under(smbd.share_dir / "exports") == ["daily/people.csv"]


def test_the_drop_folder_lists_streams_claims_and_moves(smbd):
    """Files matching the pattern are listed with size and time; one streams in
    pieces; a claim and a move are renames that never replace a file."""
    incoming = smbd.share_dir / "incoming"
    (incoming / "processed").mkdir(parents=True)
    big = os.urandom(3 * 2**20)
    (incoming / "orders_1.csv").write_bytes(big)
    (incoming / "orders_2.csv").write_bytes(b"id\n2\n")
    (incoming / "readme.txt").write_bytes(b"x\n")
    (incoming / "processed" / "orders_2.csv").write_bytes(b"old\n")
    with SmbDropFolder(connection_to(smbd), "incoming") as folder:
        listed = folder.list_files("*.csv")
        assert [(f.name, f.size) for f in listed] == [
            ("orders_1.csv", len(big)),
            ("orders_2.csv", 5),
        ]
        with folder.open_file("orders_1.csv") as reader:
            pieces = list(iter(lambda: reader.read(1 << 20), b""))
        assert b"".join(pieces) == big and len(pieces) >= 3
        folder.take("orders_1.csv", "claimed/run-a/orders_1.csv")
        assert folder.list_folders("claimed") == ["run-a"]
        assert folder.file_info("claimed/run-a/orders_1.csv").size == len(big)
        with pytest.raises(FileNotFoundError):
            folder.take("orders_1.csv", "claimed/run-b/orders_1.csv")
        with pytest.raises(FileExistsError):
            folder.move("orders_2.csv", "processed/orders_2.csv")
        assert (incoming / "processed" / "orders_2.csv").read_bytes() == b"old\n"
        assert folder.describe() == f"smb://127.0.0.1:{smbd.port}/drop/incoming"


def test_a_pick_up_from_a_share_loads_each_file_once(smbd, postgres):
    """The inbound pick-up over a share: the files load into PostgreSQL and move to
    processed/<day>/; the same file dropped again only moves."""
    for target in orders_target(postgres):
        block, engine = target
        incoming = smbd.share_dir / "pickup"
        incoming.mkdir()
        (incoming / "a.csv").write_text("order_id,customer,amount\n1,ann,1.50\n")
        folder = SmbDropFolder(connection_to(smbd), "pickup")
        rules = PickupRules(settle_seconds=0)
        first = inbound_run(folder, block, LoadPlan("orders"), rules)
        (incoming / "a.csv").write_text("order_id,customer,amount\n1,ann,1.50\n")
        second = inbound_run(folder, block, LoadPlan("orders"), rules)
        assert [r.outcome for r in first + second] == ["loaded", "skipped"]
        assert ids_in(engine) == [1]
        assert files_under(incoming) == [
            "processed/<day>/a.2.csv",
            "processed/<day>/a.csv",
        ]


@pytest.mark.faults
def test_a_wrong_password_is_tried_once_and_never_shown(fault, smbd):
    """A refused login: the task fails at once (no retry could mend it, and retries
    could lock the account), in one line without the password."""
    fault.expect("failed clean")
    fault.secret("wrong-password-not-to-be-shown")
    sink = SmbSink(connection_to(smbd, password="wrong-password-not-to-be-shown"))
    flow_state, task_state, run_count = run_in_a_flow(
        delivery.deliver_frame.with_options(**SLOW_RETRIES), sink, FRAME, "x.csv"
    )
    assert flow_state.is_failed() and run_count == 1
    message = str(task_state.result(raise_on_failure=False))
    assert "STATUS_LOGON_FAILURE" in message
    assert "wrong-password" not in message


@pytest.mark.faults
def test_a_share_that_refuses_writes_fails_at_once(fault):
    """A read-only share: the delivery fails at once with the server's refusal;
    nothing is left on the share."""
    fault.expect("failed clean")
    for server in serve(lambda: services.running_smbd(read_only=True)):
        fault.secret(server.password)
        flow_state, task_state, run_count = run_in_a_flow(
            delivery.deliver_frame.with_options(**SLOW_RETRIES),
            SmbSink(connection_to(server)),
            FRAME,
            "x.csv",
        )
        assert flow_state.is_failed() and run_count == 1
        assert isinstance(task_state.result(raise_on_failure=False), PermissionError)
        assert files_under(server.share_dir) == []


def kill_and_restart_when(server, condition) -> threading.Thread:
    """A thread that kills smbd (and its sessions) once `condition()` holds, then
    starts it again on the same port."""

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not condition():
            time.sleep(0.01)
        server.stop()
        server.start()

    watcher = threading.Thread(target=watch)
    watcher.start()
    return watcher


def large_frame() -> pd.DataFrame:
    """About 40 MB of CSV."""
    ids = range(LARGE_ROWS)
    return pd.DataFrame({"id": ids, "name": [f"customer number {i}" for i in ids]})


@pytest.mark.faults
def test_smbd_killed_mid_upload_the_retry_delivers_the_file_whole(fault, own_smbd):
    """smbd dies with 8 MB of the upload written: the temporary file stays behind
    the final name, the task's retry delivers the whole file, and only it."""
    fault.expect("recovered")
    fault.secret(own_smbd.password)
    frame = large_frame()

    def partial_grew() -> bool:
        return any(
            path.name.startswith(".big.csv.part-") and path.stat().st_size > 8 * 2**20
            for path in own_smbd.share_dir.iterdir()
        )

    watcher = kill_and_restart_when(own_smbd, partial_grew)
    started = time.monotonic()
    flow_state, _, run_count = run_in_a_flow(
        delivery.deliver_frame.with_options(**QUICK_RETRIES),
        SmbSink(connection_to(own_smbd)),
        frame,
        "big.csv",
    )
    fault.cost(time.monotonic() - started)
    watcher.join()
    assert flow_state.is_completed() and run_count == 2
    delivered = (own_smbd.share_dir / "big.csv").read_bytes()
    assert delivered.count(b"\n") == LARGE_ROWS + 1
    last = LARGE_ROWS - 1
    assert delivered.endswith(f'{last},"customer number {last}"\n'.encode())


@pytest.mark.faults
def test_smbd_killed_mid_download_the_retry_loads_the_file_once(
    fault, own_smbd, postgres
):
    """smbd dies while a large partner file streams into COPY: that try rolls back,
    the task's retry reads the file again from its first byte, and every row is
    in the table once."""
    fault.expect("recovered")
    fault.secret(own_smbd.password)
    for block, engine in orders_target(postgres):
        incoming = own_smbd.share_dir / "pickup"
        incoming.mkdir()
        lines = ["order_id,customer,amount\n"]
        lines += [f"{i},customer {i},{i % 1000}.25\n" for i in range(1, LARGE_ROWS + 1)]
        (incoming / "orders.csv").write_text("".join(lines))

        def copy_under_way(engine=engine) -> bool:
            with engine.connect() as connection:
                return bool(
                    connection.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_progress_copy "
                        "WHERE bytes_processed > 4000000"
                    ).scalar()
                )

        watcher = kill_and_restart_when(own_smbd, copy_under_way)
        started = time.monotonic()
        reports = inbound_run(
            SmbDropFolder(connection_to(own_smbd), "pickup"),
            block,
            LoadPlan("orders"),
            PickupRules(settle_seconds=0),
        )
        fault.cost(time.monotonic() - started)
        watcher.join()
        assert [r.outcome for r in reports] == ["loaded"]
        with engine.connect() as connection:
            count, distinct = connection.exec_driver_sql(
                "SELECT count(*), count(DISTINCT order_id) FROM orders"
            ).one()
        assert count == distinct == LARGE_ROWS
