"""Connection blocks per environment (`setup` saves them: test_setup.py)."""

import pytest
from fixture_data import fixture_database

from toolkit import connections
from toolkit import delivery


@pytest.mark.usefixtures("prefect_api_url")
def test_prod_without_blocks_names_the_missing_block():
    """prod never falls back to the sample data: it says which block to create."""
    with pytest.raises(ValueError, match="'nowhere-database-prod'"):
        connections.database_for("nowhere", "prod")


@pytest.mark.usefixtures("prefect_api_url")
def test_dev_without_blocks_uses_the_embedded_default(tmp_path, monkeypatch):
    """dev with no blocks: the flow's own default database and a local folder."""
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path))
    source = connections.database_for("nowhere", "dev", dev_default=fixture_database)
    sink = connections.sink_for("nowhere", "dev")
    assert source.url == f"sqlite:///{tmp_path / 'fixture_shop.sqlite'}"
    assert sink == delivery.LocalFolderSink(str(tmp_path / "dev"))


@pytest.mark.usefixtures("prefect_api_url")
def test_dev_without_blocks_or_default_names_the_block():
    """A flow that names no embedded default needs its dev block too."""
    with pytest.raises(ValueError, match="'nowhere-database-dev'"):
        connections.database_for("nowhere", "dev")


def test_unknown_environment_is_refused():
    """Only dev and prod exist."""
    with pytest.raises(connections.UnknownEnvironment):
        connections.database_for("example", "staging")
