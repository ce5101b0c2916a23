"""Connection blocks per environment, and the tool that saves them."""

import asyncio

import pytest
from prefect.client.orchestration import get_client

import connections
import delivery
import save_connection_blocks
from database import DatabaseConnection


def read_block_document(name: str, block_type: str):
    """The stored block document as the API shows it, secrets obfuscated."""

    async def read():
        async with get_client() as client:
            return await client.read_block_document_by_name(
                name, block_type, include_secrets=False
            )

    return asyncio.run(read())


@pytest.mark.usefixtures("prefect_api_url")
def test_saved_database_block_keeps_the_password_in_a_secret(monkeypatch):
    """The password goes into a Secret block, never shown, and the flow gets it."""
    monkeypatch.setenv("FLOWS_DATABASE_PASSWORD", "s3cret-Pa55")
    url = "postgresql+psycopg2://reader@db.example.edu:5432/warehouse"
    save_connection_blocks.main(
        ["--system", "tests", "--env", "prod", "--no-prompt", "database", "--url", url]
    )

    loaded = connections.database_for("tests", "prod")
    assert isinstance(loaded, DatabaseConnection)
    assert loaded.url == url and loaded.password.get() == "s3cret-Pa55"
    stored = read_block_document("tests-database-prod-password", "secret").data["value"]
    assert "s3cret" not in str(stored)
    document = read_block_document("tests-database-prod", "flows-database-connection")
    assert "s3cret" not in str(document.data)


@pytest.mark.usefixtures("prefect_api_url")
def test_prod_without_blocks_names_the_missing_block():
    """prod never falls back to the sample data: it says which block to create."""
    with pytest.raises(ValueError, match="'nowhere-database-prod'"):
        connections.database_for("nowhere", "prod")


@pytest.mark.usefixtures("prefect_api_url")
def test_dev_without_blocks_uses_the_embedded_default(tmp_path, monkeypatch):
    """dev with no blocks: the SQLite sample and a local folder."""
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path))
    source = connections.database_for("nowhere", "dev")
    sink = connections.sink_for("nowhere", "dev")
    assert source.url == f"sqlite:///{tmp_path / 'sample_university.sqlite'}"
    assert sink == delivery.LocalFolderSink(str(tmp_path / "dev"))


def test_unknown_environment_is_refused():
    """Only dev and prod exist."""
    with pytest.raises(connections.UnknownEnvironment):
        connections.database_for("example", "staging")
