"""The fixture flow, whole: dev on a fresh checkout, main against PostgreSQL and sshd."""

import asyncio
import json
import os

import pytest
from deploy_helpers import run_flow_script
from prefect import get_client
from prefect.blocks.system import Secret
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from conftest import FIXTURE_FLOWS_DIR, fresh_database, sftp_connection_to
from fixture_data import load_fixture_data

from toolkit import database
from toolkit.database import DatabaseConnection

DELIVERED = [
    "customer_totals.csv",
    "orders_2024-08-01.csv",
]


def test_dev_run_needs_no_configuration(checkout, monkeypatch):
    """`python3 flows/fixture_flow.py run` on a fresh clone writes its files."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("FLOWS_OUTPUT_DIR", raising=False)
    completed = run_flow_script(checkout, "run")
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = checkout / "flows" / "output" / "dev"
    assert sorted(os.listdir(output)) == DELIVERED
    assert (
        (output / "customer_totals.csv")
        .read_text()
        .startswith('customer,orders,total_cents\n"acme",12,688410\n')
    )
    assert str(output / "customer_totals.csv") in completed.stdout + completed.stderr


@pytest.fixture
def prod_blocks(postgres, sshd, tmp_path, monkeypatch, prefect_api_url):
    """The main blocks saved: PostgreSQL with dev's sample data, sshd's folder.

    The partner's folder is returned; the secrets the blocks hold are in
    `postgres.password` and `sshd.client_key`.
    """
    del prefect_api_url  # the blocks are saved on the session's server
    monkeypatch.setattr(database, "SQL_DIR", FIXTURE_FLOWS_DIR / "sql")
    database_name = "shop"
    load_fixture_data(fresh_database(postgres, database_name))

    partner = tmp_path / "partner"
    partner.mkdir()
    DatabaseConnection(
        url=postgres.url(password=False, database=database_name),
        password=Secret(value=postgres.password),
    ).save("fixture-database-main", overwrite=True)
    sftp_connection_to(sshd, str(partner / "nightly")).save(
        "fixture-sftp-main", overwrite=True
    )
    return partner / "nightly"


def test_prod_run_reads_postgres_and_delivers_over_sftp(
    prod_blocks, tmp_path, monkeypatch
):
    """With main blocks saved, the same flow reads PostgreSQL and delivers by SFTP.

    PostgreSQL holds the same sample data as dev's SQLite, so the files must be the
    same bytes as a dev run's.
    """
    # pylint: disable-next=import-outside-toplevel
    from fixture_flow import fixture_flow

    prod_rows = fixture_flow(env="main")
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "dev-output"))
    dev_rows = fixture_flow(env="dev")

    assert sorted(os.listdir(prod_blocks)) == DELIVERED
    assert prod_rows == dev_rows and all(count > 0 for count in prod_rows.values())
    for name in DELIVERED:
        dev_file = tmp_path / "dev-output" / "dev" / name
        assert (prod_blocks / name).read_bytes() == dev_file.read_bytes()


async def artifacts_of_run(flow_run_id) -> list:
    """The artifacts of one flow run and its task runs, read back from the API."""
    async with get_client() as client:
        return await client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def secret_lines(postgres, sshd) -> list[str]:
    """Every piece of a secret the main blocks hold: the password, the key's lines."""
    key_lines = [
        line
        for line in sshd.client_key.splitlines()
        if line.strip() and "PRIVATE KEY" not in line
    ]
    return [postgres.password, *key_lines]


def test_prod_run_records_every_file_as_artifacts(prod_blocks, postgres, sshd):
    """One table per delivery task and the flow's table of both files, with the
    sizes the SFTP server checked, and no secret anywhere in them."""
    # pylint: disable-next=import-outside-toplevel
    from fixture_flow import fixture_flow

    state = fixture_flow(env="main", return_state=True)
    assert state.is_completed()
    artifacts = asyncio.run(artifacts_of_run(state.state_details.flow_run_id))

    [summary] = [a for a in artifacts if a.key == "fixture-deliveries-main"]
    rows = sorted(json.loads(summary.data), key=lambda row: row["file"])
    assert [row["file"] for row in rows] == DELIVERED
    for row in rows:
        size = (prod_blocks / row["file"]).stat().st_size
        assert row["bytes"] == row["remote size checked"] == size
        assert row["rows"] > 0 and row["seconds"] >= 0 and row["MB/s"] >= 0
        assert row["destination"] == (
            f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{prod_blocks}/{row['file']}"
        )
    per_task = [row for a in artifacts if a.task_run_id for row in json.loads(a.data)]
    assert sorted(per_task, key=lambda row: row["file"]) == rows
    for artifact in artifacts:
        shown = f"{artifact.data} {artifact.description}"
        assert not [
            secret for secret in secret_lines(postgres, sshd) if secret in shown
        ]
