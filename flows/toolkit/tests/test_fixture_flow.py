"""The fixture flow, whole: dev on a fresh checkout, prod against PostgreSQL and sshd."""

import os

import pytest
from deploy_helpers import run_flow_script
from prefect.blocks.system import Secret
from sqlalchemy import create_engine

from conftest import FIXTURE_FLOWS_DIR, sftp_connection_to
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


@pytest.mark.usefixtures("prefect_api_url")
def test_prod_run_reads_postgres_and_delivers_over_sftp(
    postgres, sshd, tmp_path, monkeypatch
):
    """With prod blocks saved, the same flow reads PostgreSQL and delivers by SFTP.

    PostgreSQL holds the same sample data as dev's SQLite, so the files must be the
    same bytes as a dev run's.
    """
    # pylint: disable-next=import-outside-toplevel
    from fixture_flow import fixture_flow

    monkeypatch.setattr(database, "SQL_DIR", FIXTURE_FLOWS_DIR / "sql")

    database_name = "shop"
    engine = create_engine(postgres.url())
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.exec_driver_sql(f"DROP DATABASE IF EXISTS {database_name}")
        admin.exec_driver_sql(f"CREATE DATABASE {database_name}")
    engine.dispose()
    load_fixture_data(create_engine(postgres.url(database=database_name)))

    partner = tmp_path / "partner"
    partner.mkdir()
    DatabaseConnection(
        url=postgres.url(password=False, database=database_name),
        password=Secret(value=postgres.password),
    ).save("fixture-database-prod", overwrite=True)
    sftp_connection_to(sshd, str(partner / "nightly")).save(
        "fixture-sftp-prod", overwrite=True
    )

    prod_rows = fixture_flow(env="prod")
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "dev-output"))
    dev_rows = fixture_flow(env="dev")

    assert sorted(os.listdir(partner / "nightly")) == DELIVERED
    assert prod_rows == dev_rows and all(count > 0 for count in prod_rows.values())
    for name in DELIVERED:
        dev_file = tmp_path / "dev-output" / "dev" / name
        assert (partner / "nightly" / name).read_bytes() == dev_file.read_bytes()
