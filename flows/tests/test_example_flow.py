"""The example flow, whole: dev on a fresh checkout, prod against PostgreSQL and sshd."""

import os

import pytest
from conftest import sftp_connection_to
from deploy_helpers import run_flow_script
from prefect.blocks.system import Secret
from sqlalchemy import create_engine

from database import DatabaseConnection
from sample_data import load_sample_data

DELIVERED = [
    "course_enrollment_2024-08.csv",
    "program_headcount.csv",
    "roster.csv",
    "term_gpa.csv",
]


def test_dev_run_needs_no_configuration(checkout, monkeypatch):
    """`python3 flows/example_flow.py run` on a fresh clone writes its four files."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("FLOWS_OUTPUT_DIR", raising=False)
    completed = run_flow_script(checkout, "run")
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = checkout / "flows" / "output" / "dev"
    assert sorted(os.listdir(output)) == DELIVERED
    assert (
        (output / "roster.csv")
        .read_text()
        .startswith("student_id,full_name,email,program,entry_year\n")
    )
    assert str(output / "roster.csv") in completed.stdout + completed.stderr


@pytest.mark.usefixtures("prefect_api_url")
def test_prod_run_reads_postgres_and_delivers_over_sftp(
    postgres, sshd, tmp_path, monkeypatch
):
    """With prod blocks saved, the same flow reads PostgreSQL and delivers by SFTP.

    PostgreSQL holds the same sample data as dev's SQLite, so the files must be the
    same bytes as a dev run's.
    """
    # pylint: disable-next=import-outside-toplevel
    from example_flow import example_flow

    database_name = "university"
    engine = create_engine(postgres.url())
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.exec_driver_sql(f"DROP DATABASE IF EXISTS {database_name}")
        admin.exec_driver_sql(f"CREATE DATABASE {database_name}")
    engine.dispose()
    load_sample_data(create_engine(postgres.url(database=database_name)))

    partner = tmp_path / "partner"
    partner.mkdir()
    DatabaseConnection(
        url=postgres.url(password=False, database=database_name),
        password=Secret(value=postgres.password),
    ).save("example-database-prod", overwrite=True)
    sftp_connection_to(sshd, str(partner / "nightly")).save(
        "example-sftp-prod", overwrite=True
    )

    prod_rows = example_flow(env="prod")
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "dev-output"))
    dev_rows = example_flow(env="dev")

    assert sorted(os.listdir(partner / "nightly")) == DELIVERED
    assert prod_rows == dev_rows and all(count > 0 for count in prod_rows.values())
    for name in DELIVERED:
        dev_file = tmp_path / "dev-output" / "dev" / name
        assert (partner / "nightly" / name).read_bytes() == dev_file.read_bytes()
