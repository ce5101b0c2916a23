"""Fixtures shared by the toolkit's tests: a real Prefect API, servers, git checkouts.

The checkouts hold the template's files and the toolkit's own fixture flow
(fixture_flows/), never the example: that is the team's, and a copy deletes it.

A test whose service cannot be started is skipped with the reason, unless
REQUIRE_SERVICES=1 (set by .ci/run and GitHub Actions): then it fails.
"""

import os
import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# Prefect reads its settings when first imported: keep the tests' Prefect state out of
# the user's ~/.prefect before anything imports it.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="flows-tests-prefect-home-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The server's background loops that no test waits on, off in the servers the tests
# start: on two cores their CPU is the suite's (a deployment with a cron schedule
# alone has the scheduler write a hundred runs). The notification service stays on.
for _service in (
    "SCHEDULER",
    "LATE_RUNS",
    "PAUSE_EXPIRATIONS",
    "CANCELLATION_CLEANUP",
    "FOREMAN",
    "TRIGGERS",
    "EVENT_PERSISTER",
):
    os.environ.setdefault(f"PREFECT_API_SERVICES_{_service}_ENABLED", "false")

# pylint: disable=wrong-import-position,wrong-import-order,redefined-outer-name
import pytest

import fault_record
import local_prefect
import services
from fixture_checkout import FIXTURE_FLOWS_DIR, lay_out_flows
from services import free_port
from toolkit.deployer.deployed_files import write_default_ignore_file

# The fixture flow's modules import as the team's do in a copy (flows/ is on the path).
sys.path.append(str(FIXTURE_FLOWS_DIR))
REPO_NAME = "acme-data-flows-demo"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Flow Tester",
    "GIT_AUTHOR_EMAIL": "tester@example.invalid",
    "GIT_COMMITTER_NAME": "Flow Tester",
    "GIT_COMMITTER_EMAIL": "tester@example.invalid",
}


# The archive's day folder, `processed/2026-12-08/`.
ARCHIVE_DAY = re.compile(r"^processed/(\d{4}-\d{2}-\d{2})/")


def utc_days_of_this_test() -> set[str]:
    """Today's UTC date and yesterday's: a run that crossed midnight before its
    check archived under yesterday, and that is still the UTC day of the run."""
    now = datetime.now(timezone.utc)
    return {day.date().isoformat() for day in (now, now - timedelta(days=1))}


def files_under(path) -> list[str]:
    """Every file below `path`, relative, hidden ones too. A `processed/<date>/`
    folder reads `processed/<day>/`, once its date is checked to be the run's UTC day.
    """
    found = []
    for root, _, names in os.walk(path):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), path)
            day = ARCHIVE_DAY.match(relative)
            if day:
                assert day.group(1) in utc_days_of_this_test(), relative
                relative = ARCHIVE_DAY.sub("processed/<day>/", relative)
            found.append(relative)
    return sorted(found)


def service_unavailable(reason: str):
    """Skip the test, or fail it where services are required."""
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


def serve(start_server):
    """Yield the server `start_server()` starts, or skip/fail when it cannot start."""
    try:
        with start_server() as server:
            fault_record.remember_secrets_of(server)
            yield server
    except services.ServiceUnavailable as error:
        service_unavailable(str(error))


def fresh_database(server, name: str):
    """An empty database `name` on the PostgreSQL `server`, and an engine of it: the
    database of a test or a module of its own. FORCE: an earlier run's pooled (or a
    killed run's) connections may still be open to it."""
    # pylint: disable-next=import-outside-toplevel
    from sqlalchemy import create_engine

    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return create_engine(server.url(database=name))


@pytest.fixture(params=["local", "sftp"])
def drop(request, tmp_path):
    """(a drop folder of each kind, its path on this machine's disk): a local folder,
    and the same folder over the session's sshd."""
    # pylint: disable-next=import-outside-toplevel
    from toolkit import pickup

    folder = tmp_path / "drop"
    folder.mkdir()
    if request.param == "local":
        yield pickup.LocalDropFolder(folder), folder
        return
    sshd = request.getfixturevalue("sshd")
    with pickup.SftpDropFolder(sftp_connection_to(sshd, str(folder))) as remote:
        yield remote, folder


@pytest.fixture(scope="session")
def mariadb():
    """A real MariaDB on 127.0.0.1 for the whole session."""
    yield from serve(services.running_mariadb)


def fresh_mariadb_database(server, name: str):
    """An empty database `name` on the MariaDB `server`, and an engine of it."""
    # pylint: disable-next=import-outside-toplevel
    from sqlalchemy import create_engine

    server.admin(
        f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name} "
        "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    )
    return create_engine(server.url(database=name), pool_pre_ping=True)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on 127.0.0.1 for the whole session."""
    yield from serve(services.running_postgres)


@pytest.fixture(scope="session")
def image_registry():
    """A real image registry (Debian's docker-registry) on 127.0.0.1."""
    yield from serve(services.running_image_registry)


@pytest.fixture(scope="session")
def sshd():
    """A real OpenSSH sshd on 127.0.0.1 for the whole session (tests must not kill it)."""
    yield from serve(services.running_sshd)


@pytest.fixture
def own_sshd():
    """A real sshd of this test's own, which it may kill and restart."""
    yield from serve(services.running_sshd)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3-compatible server on 127.0.0.1 for the whole session."""
    yield from serve(services.running_s3_server)


@dataclass
class S3Bucket:
    """A bucket of the test's own, the storage root in it, and the key of its block."""

    endpoint_url: str
    bucket: str
    root: str
    credentials_block: str
    access_key_id: str
    secret_access_key: str

    def filesystem(self):
        """An s3fs client of the server that never answers from a cache."""
        # pylint: disable-next=import-outside-toplevel
        import s3fs

        return s3fs.S3FileSystem(
            key=self.access_key_id,
            secret=self.secret_access_key,
            client_kwargs={"endpoint_url": self.endpoint_url},
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def keys(self, below: str = "") -> list[str]:
        """Every object key below `root/below`, relative to the root, sorted."""
        prefix = f"{self.root.removeprefix('s3://')}/"
        found = self.filesystem().find(prefix + below)
        return sorted(key.removeprefix(prefix) for key in found)


def without_aws_credential_chain(monkeypatch) -> None:
    """No AWS key from the environment, a profile or an instance role."""
    for variable in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_bucket(s3_server, prefect_api_url, tmp_path, monkeypatch):
    """FLOWS_STORAGE_ROOT in a fresh bucket; its key only in a saved credentials block.

    The AWS credential chain is emptied, here and in the processes the test starts,
    so the deployer and the workers can only use the block.
    """
    # pylint: disable-next=import-outside-toplevel
    from toolkit.deployer.storage.s3 import S3Credentials

    del prefect_api_url  # the block is saved on the session's server
    suffix = tmp_path.name[-20:].lower().replace("_", "-")
    bucket = S3Bucket(
        endpoint_url=s3_server.endpoint_url,
        bucket=f"flows-{suffix}",
        root=f"s3://flows-{suffix}/prefect",
        credentials_block=f"storage-{suffix}",
        access_key_id=f"AKIATEST{secrets.token_hex(6).upper()}",
        secret_access_key=f"secret-{secrets.token_urlsafe(24)}",
    )
    fault_record.remember_secret(bucket.secret_access_key)
    without_aws_credential_chain(monkeypatch)
    monkeypatch.setenv("FLOWS_STORAGE_ROOT", bucket.root)
    monkeypatch.setenv("FLOWS_S3_ENDPOINT_URL", bucket.endpoint_url)
    monkeypatch.setenv("FLOWS_S3_CREDENTIALS_BLOCK", bucket.credentials_block)
    bucket.filesystem().mkdir(bucket.bucket)
    S3Credentials(
        aws_access_key_id=bucket.access_key_id,
        aws_secret_access_key=bucket.secret_access_key,
    ).save(bucket.credentials_block, overwrite=True)
    return bucket


def sftp_connection_to(server, remote_dir: str, **overrides):
    """An SftpConnection block (unsaved) to `server`, logging in with its client key."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.blocks.system import Secret

    # pylint: disable-next=import-outside-toplevel
    from toolkit.sftp import SftpConnection

    settings = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": server.user,
        "private_key": Secret(value=server.client_key),
        "known_hosts": server.known_hosts_line,
        "remote_dir": remote_dir,
        "timeout_seconds": 10,
    }
    return SftpConnection(**{**settings, **overrides})


@contextmanager
def running_prefect_server(
    home: Path, events: bool, executable: str = local_prefect.PREFECT_EXECUTABLE
) -> Iterator[str]:
    """A real `prefect server start` on 127.0.0.1 keeping its state in `home`: its
    API URL while the block runs (skipped, or failed, when it cannot start)."""
    try:
        process, url = local_prefect.start_server(
            home, free_port(), events=events, executable=executable
        )
    except (OSError, RuntimeError) as error:
        service_unavailable(f"Prefect server: {error}")
    try:
        yield url
    finally:
        if process is not None:
            local_prefect.stop_process(process)


@contextmanager
def api_url_pointed_at(url: str, monkeypatch) -> Iterator[str]:
    """PREFECT_API_URL pointed at `url`, in this process and its children."""
    # pylint: disable-next=import-outside-toplevel
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", url)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """The session's server. Events off: a 2.20 server as installed (failure
    notifications through policies); test_notifications.py starts one with events
    for automations."""
    with running_prefect_server(
        tmp_path_factory.mktemp("prefect-server"), False
    ) as url:
        yield url


@pytest.fixture
def prefect_api_url(prefect_server, monkeypatch):
    """PREFECT_API_URL pointed at the session's server, in this process and children."""
    with api_url_pointed_at(prefect_server, monkeypatch) as url:
        yield url


@pytest.fixture(scope="session")
def prefect3_python() -> Path:
    """The Python of the venv on Prefect 3 (skipped, or failed, when missing)."""
    python = local_prefect.PREFECT3_VENV / "bin" / "python"
    if not python.exists():
        service_unavailable(
            f"no Prefect 3 venv at {local_prefect.PREFECT3_VENV}: "
            "`make venv PREFECT=3` installs it"
        )
    return python


@pytest.fixture(scope="session")
def prefect3_server(prefect3_python, tmp_path_factory):
    """A Prefect 3 server of the session, from the venv on Prefect 3: its API URL."""
    with running_prefect_server(
        tmp_path_factory.mktemp("prefect3-server"),
        events=False,
        executable=str(prefect3_python.parent / "prefect"),
    ) as url:
        yield url


@pytest.fixture(autouse=True)
def deploy_environment(tmp_path, monkeypatch):
    """Settings of the tests' own, and none of the CI's branch variables."""
    for variable in ("GITHUB_ACTIONS", "GITHUB_HEAD_REF", "GITHUB_REF_NAME"):
        monkeypatch.delenv(variable, raising=False)
    for variable in ("GITHUB_REPOSITORY", "FLOWS_REPO_NAME", "FLOWS_DOCKER_REGISTRY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FLOWS_STORAGE_ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("FLOWS_WORK_POOL", f"pool-{tmp_path.name[-20:]}".lower())
    monkeypatch.setenv("FLOWS_WORK_POOL_TYPE", "docker")
    for name, value in GIT_IDENTITY.items():
        monkeypatch.setenv(name, value)


def git(checkout: Path, *arguments: str) -> str:
    """Run git in `checkout`, failing the test on error."""
    completed = subprocess.run(
        ["git", *arguments],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_IDENTITY},
    )
    return completed.stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A clone of a bare origin holding flows/ with the fixture flow, on main, pushed."""
    origin = tmp_path / "origin" / f"{REPO_NAME}.git"
    origin.mkdir(parents=True)
    git(origin, "init", "-q", "--bare", "-b", "main")
    work = tmp_path / "work" / REPO_NAME
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    git(work, "remote", "add", "origin", str(origin))
    lay_out_flows(work / "flows")
    write_default_ignore_file(work)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "flows from the template")
    git(work, "push", "-q", "origin", "main")
    return work


# Each phase's report, kept on the test item: the `fault` fixture reads the call's.
PHASE_REPORTS = pytest.StashKey[dict]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item):
    """Keep each phase's report (its outcome and captured output) on the item."""
    outcome = yield
    report = outcome.get_result()
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report


def pytest_collection_modifyitems(items):
    """A test that takes the `fault` fixture is a fault test: it runs apart."""
    for item in items:
        if "fault" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def fault(request):
    """The test's FaultRecord (fault_record.py): its outcome, its cost, and at
    teardown the scan for secrets in its output, its files and the Prefect API."""
    # The session's server, when the test uses one: its records are scanned too.
    api_url = (
        request.getfixturevalue("prefect_server")
        if "prefect_server" in request.fixturenames
        else None
    )
    record = fault_record.FaultRecord(test=request.node.nodeid)
    yield record
    reports = request.node.stash.get(PHASE_REPORTS, {})
    call = reports.get("call")
    captured = "\n".join(
        f"{report.capstdout}\n{report.capstderr}\n{report.caplog}"
        for report in reports.values()
    )
    # pylint: disable-next=import-outside-toplevel
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        leaks = record.scan(captured, api_reachable=api_url is not None)
    record.write(passed=call is not None and call.passed, leaks=leaks)
    assert record.expected, "a fault test says what it shows: fault.expect(...)"
    if leaks:
        pytest.fail(f"secrets leaked: {fault_record.redacted(leaks)}")
