"""`python3 flows/util.py setup` against a real Prefect API (and S3 server)."""

import asyncio
import os

import pytest
from deploy_helpers import call_command_line, run_script
from prefect.client.orchestration import get_client

from toolkit import connections
import util
from toolkit.deployer.storage.s3 import S3Credentials
from toolkit.sftp import open_sftp

DATABASE_URL = "postgresql+psycopg2://reader@db.example.edu:5432/warehouse"


@pytest.fixture
def connection_values(sshd, tmp_path, monkeypatch):
    """Environment variables for a database `warehouse` and an SFTP server `partner`."""
    known_hosts = tmp_path / "partner_known_hosts"
    known_hosts.write_text(sshd.known_hosts_line + "\n", encoding="utf-8")
    private_key = tmp_path / "partner_key"
    private_key.write_text(sshd.client_key, encoding="utf-8")
    values = {
        "FLOWS_WAREHOUSE_DATABASE_URL": DATABASE_URL,
        "FLOWS_WAREHOUSE_DATABASE_PASSWORD": "db-Pa55-setup-only",
        "FLOWS_PARTNER_SFTP_HOST": "127.0.0.1",
        "FLOWS_PARTNER_SFTP_PORT": str(sshd.port),
        "FLOWS_PARTNER_SFTP_USERNAME": sshd.user,
        "FLOWS_PARTNER_SFTP_KNOWN_HOSTS_FILE": str(known_hosts),
        "FLOWS_PARTNER_SFTP_PRIVATE_KEY_FILE": str(private_key),
        "FLOWS_PARTNER_SFTP_REMOTE_DIR": "incoming",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def run_setup(checkout, *args):
    """`python3 flows/util.py setup ARGS --no-prompt` in the checkout."""
    return run_script(
        checkout,
        "flows/util.py",
        "setup",
        "--database",
        "warehouse",
        "--sftp",
        "partner",
        "--no-prompt",
        *args,
    )


def read_block_data(name: str, block_type: str) -> dict:
    """A block document's data as the API shows it, secrets obfuscated."""

    async def read():
        async with get_client() as client:
            document = await client.read_block_document_by_name(
                name, block_type, include_secrets=False
            )
            return document.data

    return asyncio.run(read())


def workspace_state() -> dict:
    """Every block document with when it last changed, and this test's work pool and
    queues with what setup sets (the server's own services touch their timestamps)."""

    async def read():
        async with get_client() as client:
            blocks = await client.read_block_documents(include_secrets=False)
            pools = [
                pool
                for pool in await client.read_work_pools()
                if pool.name == os.environ["FLOWS_WORK_POOL"]
            ]
            queues = []
            for pool in pools:
                queues += await client.read_work_queues(work_pool_name=pool.name)
            return {
                "blocks": {(b.name, b.id, b.updated) for b in blocks},
                "pools": [
                    (p.name, p.type, p.id, str(p.base_job_template), p.is_paused)
                    for p in pools
                ],
                "queues": sorted(
                    (q.name, str(q.id), q.priority, q.concurrency_limit, q.is_paused)
                    for q in queues
                ),
            }

    return asyncio.run(read())


def test_setup_twice_changes_nothing_the_second_time(
    checkout, s3_bucket, connection_values, monkeypatch
):
    """Run 1 creates the pool, both queues and every block; run 2 changes nothing."""
    monkeypatch.setenv("FLOWS_S3_CREDENTIALS_BLOCK", "setup-storage-key")
    monkeypatch.setenv("FLOWS_S3_ACCESS_KEY_ID", s3_bucket.access_key_id)
    monkeypatch.setenv("FLOWS_S3_SECRET_ACCESS_KEY", s3_bucket.secret_access_key)
    pool = os.environ["FLOWS_WORK_POOL"]

    first = run_setup(checkout)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"storage {s3_bucket.root}: bucket reachable",
        f"work pool {pool} (docker): created",
        f"work queue {pool}/main: created",
        f"work queue {pool}/dev: created",
        "block flows-s3-credentials/setup-storage-key: created",
        "block secret/warehouse-database-main-password: created",
        "block flows-database-connection/warehouse-database-main: created",
        "block secret/partner-sftp-main-private-key: created",
        "block flows-sftp-connection/partner-sftp-main: created",
    ]
    after_first = workspace_state()

    second = run_setup(checkout)
    assert second.returncode == 0, second.stderr
    assert [line.rsplit(": ", 1)[1] for line in second.stdout.splitlines()[1:]] == [
        "unchanged"
    ] * 8
    assert workspace_state() == after_first

    for secret in (
        s3_bucket.secret_access_key,
        s3_bucket.access_key_id,
        connection_values["FLOWS_WAREHOUSE_DATABASE_PASSWORD"],
        "PRIVATE KEY",
    ):
        for output in (first.stdout, first.stderr, second.stdout, second.stderr):
            assert secret not in output


@pytest.mark.usefixtures("s3_bucket", "connection_values")
def test_saved_blocks_are_the_ones_flows_and_deploys_use(checkout, monkeypatch):
    """A flow's `env=main` connections and the deployer's bucket key come from them."""
    monkeypatch.setenv("FLOWS_S3_CREDENTIALS_BLOCK", "setup-storage-key-2")
    monkeypatch.setenv("FLOWS_S3_ACCESS_KEY_ID", "AKIASETUPSECOND")
    monkeypatch.setenv("FLOWS_S3_SECRET_ACCESS_KEY", "second-secret")
    assert run_setup(checkout).returncode == 0

    database = connections.database_for("warehouse", "main")
    assert database.url == DATABASE_URL
    assert database.password.get() == "db-Pa55-setup-only"
    sink = connections.sink_for("partner", "main")
    assert sink.connection.remote_dir == "incoming"
    with open_sftp(sink.connection) as client:  # the saved key and host key log in
        assert client.normalize(".")
    # The API keeps the password in the Secret block and never shows it.
    for name, block_type in (
        ("warehouse-database-main", "flows-database-connection"),
        ("warehouse-database-main-password", "secret"),
    ):
        assert "db-Pa55" not in str(read_block_data(name, block_type))
    saved_key = S3Credentials.load("setup-storage-key-2")
    assert saved_key.aws_secret_access_key.get_secret_value() == "second-secret"


@pytest.mark.usefixtures("s3_bucket", "connection_values")
def test_a_changed_value_updates_that_block_only(checkout, monkeypatch):
    """A new database URL: that block is updated, everything else unchanged.

    The password, no longer given, is kept: an empty answer never deletes a secret.
    """
    assert run_setup(checkout).returncode == 0
    monkeypatch.setenv("FLOWS_WAREHOUSE_DATABASE_URL", DATABASE_URL + "_v2")
    monkeypatch.delenv("FLOWS_WAREHOUSE_DATABASE_PASSWORD")
    rerun = run_setup(checkout)
    assert rerun.returncode == 0, rerun.stderr
    changed = [line for line in rerun.stdout.splitlines() if "unchanged" not in line]
    assert changed[1:] == [
        "block flows-database-connection/warehouse-database-main: updated"
    ]
    database = connections.database_for("warehouse", "main")
    assert database.url == DATABASE_URL + "_v2"
    assert database.password.get() == "db-Pa55-setup-only"


@pytest.mark.usefixtures("s3_bucket", "connection_values")
def test_missing_values_are_named_and_nothing_changes(checkout, monkeypatch):
    """Without a required variable (and no terminal): exit 2, one line, no change."""
    monkeypatch.delenv("FLOWS_WAREHOUSE_DATABASE_URL")
    monkeypatch.delenv("FLOWS_PARTNER_SFTP_HOST")
    before = workspace_state()
    refused = run_setup(checkout)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "error: nothing changed: set FLOWS_WAREHOUSE_DATABASE_URL, "
        "FLOWS_PARTNER_SFTP_HOST (or run setup in a terminal to be asked)"
    ]
    assert workspace_state() == before


@pytest.mark.usefixtures("prefect_api_url")
def test_local_storage_root_is_created(checkout, tmp_path, monkeypatch):
    """With the embedded default, setup makes the storage folder."""
    monkeypatch.setenv("FLOWS_STORAGE_ROOT", str(tmp_path / "new-storage"))
    done = run_script(checkout, "flows/util.py", "setup", "--no-prompt")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"storage {tmp_path / 'new-storage'}: created"
    assert (tmp_path / "new-storage").is_dir()


@pytest.mark.usefixtures("prefect_api_url")
def test_a_password_in_the_database_url_is_refused_unechoed(capsys, monkeypatch):
    """The URL goes into a plain field: a password there would be stored in clear."""
    monkeypatch.setenv(
        "FLOWS_LEAKY_DATABASE_URL", "postgresql://reader:hunter2-in-url@db/warehouse"
    )
    code, out, err = call_command_line(
        lambda: util.run_repository_command_line_interface(
            ["setup", "--database", "leaky", "--no-prompt"]
        ),
        capsys,
    )
    assert code == 2
    assert err.splitlines() == [
        "error: FLOWS_LEAKY_DATABASE_URL holds a password: leave it out, and set "
        "FLOWS_LEAKY_DATABASE_PASSWORD"
    ]
    assert "hunter2" not in out + err


@pytest.mark.usefixtures("prefect_api_url")
def test_a_storage_root_that_cannot_be_a_folder_is_one_line(
    tmp_path, capsys, monkeypatch
):
    """A file where the folder should be: exit 2 and the reason, no traceback."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("FLOWS_STORAGE_ROOT", str(tmp_path / "a-file"))
    code, _, err = call_command_line(
        lambda: util.run_repository_command_line_interface(["setup", "--no-prompt"]),
        capsys,
    )
    assert code == 2
    assert err.splitlines() == [
        f"error: FLOWS_STORAGE_ROOT {tmp_path / 'a-file'} cannot be a folder: "
        "File exists"
    ]
