"""Connection blocks per environment (`setup` saves them: test_setup.py)."""

import pytest
from fixture_data import fixture_database

from toolkit import connections
from toolkit import delivery
from toolkit.database import DatabaseConnection


@pytest.mark.usefixtures("prefect_api_url")
def test_main_without_blocks_names_the_missing_block():
    """main never falls back to the sample data: it says which block to create."""
    with pytest.raises(ValueError, match="'nowhere-database-main'"):
        connections.database_for("nowhere", "main")


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("env", ["main", "prod"])
def test_blocks_named_by_earlier_releases_still_serve_main(env, tmp_path):
    """A flow file or workspace from before v1.3.0 (env=prod, blocks named -prod)
    keeps working after an upgrade; a -main block, once saved, wins."""
    old = DatabaseConnection(url=f"sqlite:///{tmp_path / 'old.sqlite'}")
    old.save(f"legacy-{env}-database-prod", overwrite=True)
    assert connections.database_for(f"legacy-{env}", env).url == old.url
    new = DatabaseConnection(url=f"sqlite:///{tmp_path / 'new.sqlite'}")
    new.save(f"legacy-{env}-database-main", overwrite=True)
    assert connections.database_for(f"legacy-{env}", env).url == new.url


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
    """Only dev and main exist (and prod, main's old name)."""
    with pytest.raises(connections.UnknownEnvironment):
        connections.database_for("example", "staging")
