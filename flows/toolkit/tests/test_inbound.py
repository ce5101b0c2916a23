"""Inbound runs against a real Prefect API, PostgreSQL and sshd: files listed, settled,
loaded once each, archived; one bad file fails the run at the end, not the others."""

import asyncio
import json
import os

import pytest
from conftest import (
    files_under,
    fresh_database,
    sftp_connection_to,
    utc_days_of_this_test,
)
from prefect import flow, get_client
from prefect.blocks.system import Secret
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from sqlalchemy import text

from toolkit import inbound
from toolkit import pickup
from toolkit.database import DatabaseConnection
from toolkit.inbound import PickupRules
from toolkit.loading import LoadPlan

pytestmark = [pytest.mark.inbound, pytest.mark.usefixtures("prefect_api_url")]

HEADER = "order_id,customer,amount\n"
GOOD = {
    "a.csv": HEADER + '1,"acme",1.50\n2,"globex",2.25\n',
    "b.csv": HEADER + '3,"initech",3.00\n',
}
BAD = HEADER + '4,"umbrella",4.00\n5,"hooli",five\n'
NO_WAIT = PickupRules(settle_seconds=0)


@pytest.fixture
def target(postgres):
    """A PostgreSQL database with an orders table, as a connection block."""
    yield from orders_target(postgres)


def orders_target(postgres):
    """(a connection block, an engine) of a fresh database with an orders table."""
    engine = fresh_database(postgres, "inbound_tests")
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE orders (order_id int PRIMARY KEY, customer text,"
                " amount numeric(10, 2))"
            )
        )
    yield DatabaseConnection(
        url=postgres.url(password=False, database="inbound_tests"),
        password=Secret(value=postgres.password),
    ), engine
    engine.dispose()


@flow
def inbound_run(folder, target, plan, rules, key=None):
    """A flow around the helper, as a team's flow calls it."""
    return inbound.pick_up_and_load(folder, target, plan, rules, artifact_key=key)


def ids_in(engine) -> list[int]:
    """The order ids in the target, sorted."""
    with engine.connect() as connection:
        return [
            row[0]
            for row in connection.execute(
                text("SELECT order_id FROM orders ORDER BY 1")
            )
        ]


@pytest.mark.parametrize("where", ["local", "sftp"])
def test_good_files_load_and_a_bad_one_fails_the_run_at_the_end(  # pylint: disable=too-many-locals
    target, where, tmp_path, request
):
    """Two good files load and move to processed/<day>/; the bad one fails the run,
    named with its line, and moves to failed/; the artifact lists all three."""
    block, engine = target
    drop = tmp_path / "drop"
    drop.mkdir()
    for name, content in {**GOOD, "c.csv": BAD}.items():
        (drop / name).write_text(content)
    if where == "local":
        folder = pickup.LocalDropFolder(drop)
    else:
        sshd = request.getfixturevalue("sshd")
        folder = pickup.SftpDropFolder(sftp_connection_to(sshd, str(drop)))
    rules = PickupRules(settle_seconds=0, on_failure="move")
    key = f"inbound-test-{where}"

    state = inbound_run(
        folder, block, LoadPlan("orders"), rules, key, return_state=True
    )

    assert state.is_failed()
    assert "1 of 3 files not loaded: c.csv" in state.message
    assert "line 3, column amount, value 'five'" in state.message
    assert ids_in(engine) == [1, 2, 3]
    assert files_under(drop) == [
        "failed/c.csv",
        "processed/<day>/a.csv",
        "processed/<day>/b.csv",
    ]
    artifact = asyncio.run(latest_artifact(key))
    rows = (
        json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    )
    outcomes = {row["file"]: row["outcome"] for row in rows}
    assert outcomes == {"a.csv": "loaded", "b.csv": "loaded", "c.csv": "failed"}


async def latest_artifact(key: str):
    """The newest artifact of `key`."""
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return found[0]


def test_a_file_delivered_again_only_moves(target, tmp_path):
    """The same file dropped again (the partner resent it) is not loaded twice: the
    run skips it, says why, and archives it beside the first without overwriting."""
    block, engine = target
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.csv").write_text(GOOD["a.csv"])
    folder = pickup.LocalDropFolder(drop)
    first = inbound_run(folder, block, LoadPlan("orders"), NO_WAIT)
    (drop / "a.csv").write_text(GOOD["a.csv"])
    second = inbound_run(folder, block, LoadPlan("orders"), NO_WAIT)
    assert [r.outcome for r in first + second] == ["loaded", "skipped"]
    assert "already loaded" in second[0].reason
    assert ids_in(engine) == [1, 2]
    assert files_under(drop) == [
        "processed/<day>/a.2.csv",
        "processed/<day>/a.csv",
    ]


def test_remove_after_load_and_leave_on_failure(target, tmp_path):
    """after_load=remove removes loaded files; on_failure=leave keeps a bad one."""
    block, _ = target
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.csv").write_text(GOOD["a.csv"])
    (drop / "c.csv").write_text(BAD)
    rules = PickupRules(settle_seconds=0, after_load="remove", on_failure="leave")
    state = inbound_run(
        pickup.LocalDropFolder(drop),
        block,
        LoadPlan("orders"),
        rules,
        return_state=True,
    )
    assert state.is_failed()
    # The bad file is back under its name; the run's claim folder is gone.
    assert sorted(os.listdir(drop)) == ["c.csv", "claimed"]
    assert os.listdir(drop / "claimed") == []


def test_mistaken_rules_fail_before_any_file_is_read(target, tmp_path):
    """A mode or a rule that is none of the choices: a clear message, nothing read."""
    block, _ = target
    folder = pickup.LocalDropFolder(tmp_path)
    with pytest.raises(ValueError, match="upsert needs a key"):
        inbound.pick_up_and_load(folder, block, LoadPlan("orders", "upsert"))
    with pytest.raises(ValueError, match="after_load 'archive': move or remove"):
        inbound.pick_up_and_load(
            folder, block, LoadPlan("orders"), PickupRules(after_load="archive")
        )


def test_inbound_fixture_flow_loads_from_sftp_into_postgres(postgres, sshd, tmp_path):
    """The toolkit's inbound fixture flow with env=main: its blocks point at the
    session's sshd and a fresh PostgreSQL database; it makes its table, loads the
    partner's files and archives them; a second run finds nothing to do."""
    from inbound_fixture_flow import (  # pylint: disable=import-outside-toplevel
        inbound_fixture_flow,
    )

    engine = fresh_database(postgres, "inbound_fixture")
    DatabaseConnection(
        url=postgres.url(password=False, database="inbound_fixture"),
        password=Secret(value=postgres.password),
    ).save("fixture-database-main", overwrite=True)
    drop = tmp_path / "drop"
    drop.mkdir()
    sftp_connection_to(sshd, str(drop)).save("fixture-sftp-main", overwrite=True)
    header = "order_id,customer,placed_on,amount\n"
    (drop / "orders_1.csv").write_text(header + '1,"acme",2024-08-01,1.50\n')
    (drop / "orders_2.csv").write_text(header + '2,"hooli",2024-08-02,0.01\n')
    (drop / "notes.txt").write_text("not an order file\n")

    first = inbound_fixture_flow(env="main", settle_seconds=0)
    second = inbound_fixture_flow(env="main", settle_seconds=0)

    assert first == {"orders_1.csv": "loaded", "orders_2.csv": "loaded"}
    assert second == {}
    with engine.connect() as connection:
        loaded = connection.execute(
            text("SELECT order_id, amount::text FROM partner_orders ORDER BY 1")
        ).all()
    assert loaded == [(1, "1.50"), (2, "0.01")]
    assert files_under(drop) == [
        "notes.txt",
        "processed/<day>/orders_1.csv",
        "processed/<day>/orders_2.csv",
    ]
    engine.dispose()


def test_files_dropped_on_s3_load_once_and_move(  # pylint: disable=too-many-locals
    target, s3_bucket
):
    """The same run over an S3 prefix (moto's server): good files load and move to
    processed/<day>/, the bad one to failed/, and the run fails naming it."""
    # pylint: disable-next=import-outside-toplevel
    from toolkit.object_storage import S3Connection, S3DropFolder

    block, engine = target
    connection = S3Connection(
        bucket=s3_bucket.bucket,
        prefix="partner/incoming",
        endpoint_url=s3_bucket.endpoint_url,
        access_key_id=Secret(value=s3_bucket.access_key_id),
        secret_access_key=Secret(value=s3_bucket.secret_access_key),
        timeout_seconds=10,
    )
    client = connection.client()
    for name, content in {**GOOD, "c.csv": BAD}.items():
        client.put_object(
            Bucket=connection.bucket, Key=connection.key(name), Body=content.encode()
        )
    folder = S3DropFolder(connection)
    rules = PickupRules(settle_seconds=0, on_failure="move")

    state = inbound_run(folder, block, LoadPlan("orders"), rules, return_state=True)

    assert state.is_failed() and "1 of 3 files not loaded: c.csv" in state.message
    assert ids_in(engine) == [1, 2, 3]
    assert folder.list_files("*") == []
    assert folder.exists("failed/c.csv")
    for name in ("a.csv", "b.csv"):
        archived = [f"processed/{day}/{name}" for day in utc_days_of_this_test()]
        assert any(folder.exists(moved) for moved in archived), archived
    with engine.connect() as connection_:
        sources = connection_.execute(
            text("SELECT DISTINCT source FROM flows_inbound_ledger")
        ).all()
    assert sources == [(f"s3://{s3_bucket.bucket}/partner/incoming",)]


def test_marker_files_gate_the_load_and_move_with_their_file(target, tmp_path):
    """With markers, only a file whose marker is there loads; the marker moves with
    it; a file without one waits, named in the artifact's reasons."""
    block, engine = target
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.csv").write_text(GOOD["a.csv"])
    (drop / "a.csv.done").write_text("")
    (drop / "b.csv").write_text(GOOD["b.csv"])
    rules = PickupRules("*.csv", marker_suffix=".done")
    reports = inbound_run(
        pickup.LocalDropFolder(drop), block, LoadPlan("orders"), rules
    )
    assert [(r.file, r.outcome) for r in reports] == [
        ("b.csv", "left"),
        ("a.csv", "loaded"),
    ]
    assert ids_in(engine) == [1, 2]
    assert files_under(drop) == [
        "b.csv",
        "processed/<day>/a.csv",
        "processed/<day>/a.csv.done",
    ]
