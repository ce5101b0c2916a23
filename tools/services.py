"""Throw-away PostgreSQL, OpenSSH and S3-compatible servers on 127.0.0.1, for tests.

Each is a context manager that starts the real server in a temporary folder, waits
until it answers (bounded in time), yields how to reach it, and stops it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence


def _newest_postgres_bin() -> Path:
    """The bin folder of the newest PostgreSQL Debian or Ubuntu installed."""
    folders = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda folder: (
            int(folder.parent.name) if folder.parent.name.isdigit() else 0
        ),
    )
    return folders[-1] if folders else Path("/usr/lib/postgresql/15/bin")


POSTGRES_BIN = _newest_postgres_bin()
SSHD = Path("/usr/sbin/sshd")
START_TIMEOUT_SECONDS = 60
_WAIT = ("-w", "-t", str(START_TIMEOUT_SECONDS))  # pg_ctl: wait, but not for ever


class ServiceUnavailable(RuntimeError):
    """The server is not installed here, or did not start in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str], user: str | None = None, **kwargs) -> None:
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
        **kwargs,
    )
    if completed.returncode != 0:
        raise ServiceUnavailable(
            f"{' '.join(command[:4])} failed: {completed.stderr.strip()[-500:]}"
        )


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL: its port, its superuser and password."""

    port: int
    user: str
    password: str
    database: str = "postgres"
    # Where its data lives and whom it runs as: what start, stop and restart need.
    data_dir: Path | None = None
    run_as: str | None = None

    def url(self, password: bool = True, database: str | None = None) -> str:
        """A SQLAlchemy URL (psycopg2), with or without the password."""
        secret = f":{self.password}" if password else ""
        name = database or self.database
        return f"postgresql+psycopg2://{self.user}{secret}@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """`pg_ctl start` on 127.0.0.1 and this port; returns once it accepts logins."""
        folder = self.data_dir.parent
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {folder}"
        options += " -c fsync=off -c full_page_writes=off"  # a throw-away database
        _pg_ctl(self, "-o", options, *_WAIT, "start")

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: every session is terminated, then the server exits."""
        _pg_ctl(self, "-m", "fast", *_WAIT, "stop")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`, as an administrator would: every session is
        terminated (57P01); it returns once the server accepts connections again."""
        _pg_ctl(self, "-m", "fast", *_WAIT, "restart")


def _pg_ctl(server: Postgres, *arguments: str) -> None:
    # The server's output goes to its log file: a pipe left open by the server
    # would keep _run waiting for it.
    log = server.data_dir.parent / "log"
    command = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(server.data_dir)]
    _run([*command, "-l", str(log), *arguments], user=server.run_as)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """initdb into a temporary folder, start on 127.0.0.1, stop and remove at the end.

    As root the server runs as the `postgres` user, as PostgreSQL insists.
    """
    if not (POSTGRES_BIN / "initdb").exists():
        raise ServiceUnavailable(f"PostgreSQL is not installed ({POSTGRES_BIN})")
    run_as = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="flows-postgres-"))
    server = Postgres(
        port=free_port(),
        user="flows",
        password="flows-test-password",
        data_dir=folder / "data",
        run_as=run_as,
    )
    try:
        if run_as:
            entry = pwd.getpwnam(run_as)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        password_file = folder / "password"
        password_file.write_text(server.password, encoding="utf-8")
        if run_as:
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        data = folder / "data"
        _run(
            [str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", server.user]
            + ["--auth=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8"],
            user=run_as,
        )
        with _running(server):
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _running(server):
    """`server` started, and stopped at the end."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Sshd:
    """A running sshd: where it listens, whom it lets in, and the keys involved."""

    port: int
    user: str
    folder: Path
    client_key: str
    known_hosts_line: str
    process: subprocess.Popen

    def stop(self) -> None:
        """Kill the server and every session it serves, as a crash would."""
        _kill_tree(self.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _kill_tree(pid: int) -> None:
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for child in children:
        _kill_tree(int(child))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_for_banner(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailable(f"sshd exited with status {process.returncode}")
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        time.sleep(0.1)
    raise ServiceUnavailable(f"sshd did not answer on 127.0.0.1:{port}")


def _keygen(path: Path) -> None:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)])


def start_sshd(
    folder: Path, port: int | None = None, sftp_refuses: Sequence[str] = ()
) -> Sshd:
    """Start OpenSSH's sshd in the foreground (-D), keys and config in `folder`.

    Called again with the same folder and port it restarts the same server: the
    same host key, as after a crash. `sftp_refuses` names SFTP requests its server
    answers with "permission denied" (`sftp-server -Q requests` lists them: `rename`,
    `posix-rename`, ...), as a partner's locked-down server does: the tests run as
    root, whom no file mode refuses.
    """
    if not SSHD.exists():
        raise ServiceUnavailable(f"OpenSSH's sshd is not installed ({SSHD})")
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "host_key").exists():
        _keygen(folder / "host_key")
        _keygen(folder / "client_key")
        shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
        (folder / "port").write_text(str(port or free_port()), encoding="utf-8")
    port = int((folder / "port").read_text(encoding="utf-8"))
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {folder / 'host_key'}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "PasswordAuthentication yes",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin yes",
                "StrictModes no",
                "Subsystem sftp internal-sftp"
                + (f" -P {','.join(sftp_refuses)}" if sftp_refuses else ""),
                "",
            ]
        ),
        encoding="utf-8",
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation, as root
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [str(SSHD), "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "sshd.log", "ab"),  # pylint: disable=consider-using-with
        stdin=subprocess.DEVNULL,
    )
    _wait_for_banner(port, process)
    host_key = (folder / "host_key.pub").read_text(encoding="utf-8").split()
    return Sshd(
        port=port,
        user=getpass.getuser(),
        folder=folder,
        client_key=(folder / "client_key").read_text(encoding="utf-8"),
        known_hosts_line=f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}",
        process=process,
    )


@contextlib.contextmanager
def running_sshd(sftp_refuses: Sequence[str] = ()) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 with a fresh host key and one authorized client key;
    its SFTP server refuses the requests `sftp_refuses` names (see start_sshd)."""
    folder = Path(tempfile.mkdtemp(prefix="flows-sshd-"))
    server = start_sshd(folder, sftp_refuses=sftp_refuses)
    try:
        yield server
    finally:
        server.stop()
        # A test may have restarted it: that sshd wrote its pid here.
        with contextlib.suppress(OSError, ValueError):
            _kill_tree(int((folder / "sshd.pid").read_text(encoding="utf-8")))
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class S3Server:
    """A running S3-compatible server (moto's server mode) and its address."""

    endpoint_url: str
    process: subprocess.Popen


def _wait_for_http(url: str, process: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailable(f"{name} exited with status {process.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1):
                return
        time.sleep(0.1)
    raise ServiceUnavailable(f"{name} did not answer at {url}")


@contextlib.contextmanager
def _http_server(command: list[str], log, url: str, name: str):
    """Start `command` (output to `log`), yield its process once `url` answers, and
    stop it at the end: terminated, killed if it lingers."""
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        command, stdout=log, stderr=log, stdin=subprocess.DEVNULL
    )
    try:
        _wait_for_http(url, process, name)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """moto's S3-compatible server on 127.0.0.1: any key is accepted, state in memory."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        raise ServiceUnavailable(f"moto_server is not installed ({executable})")
    port = free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    command = [str(executable), "-H", "127.0.0.1", "-p", str(port)]
    with tempfile.TemporaryFile() as log, _http_server(
        command, log, endpoint_url, "moto_server"
    ) as process:
        yield S3Server(endpoint_url=endpoint_url, process=process)


DOCKER_REGISTRY = Path("/usr/bin/docker-registry")


@dataclass(frozen=True)
class ImageRegistry:
    """A running image registry (Debian's docker-registry) and its host:port."""

    host: str
    process: subprocess.Popen


@contextlib.contextmanager
def running_image_registry() -> Iterator[ImageRegistry]:
    """An image registry on 127.0.0.1 (plain HTTP, which Docker allows on loopback),
    its images kept in a temporary folder removed at the end."""
    executable = shutil.which("docker-registry") or str(DOCKER_REGISTRY)
    if not os.access(executable, os.X_OK):
        raise ServiceUnavailable(
            "docker-registry is not installed (apt-get install docker-registry)"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="flows-registry-") as folder:
        config = Path(folder) / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {folder}/data}}}}\n"
            f"http: {{addr: '127.0.0.1:{port}'}}\n",
            encoding="utf-8",
        )
        command = [executable, "serve", str(config)]
        url = f"http://127.0.0.1:{port}/v2/"
        with open(Path(folder) / "log", "wb") as log, _http_server(
            command, log, url, "registry"
        ) as process:
            yield ImageRegistry(host=f"127.0.0.1:{port}", process=process)


def _wait_for_port(process: subprocess.Popen, port: int, name: str, log: Path) -> None:
    """Return once `port` on 127.0.0.1 accepts a connection; ServiceUnavailable with
    the end of `log` if the process exits first, or after START_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise ServiceUnavailable(f"{name} exited: {tail}")
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        time.sleep(0.1)
    raise ServiceUnavailable(f"{name} did not answer in {START_TIMEOUT_SECONDS} s")


MARIADBD = Path("/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = Path("/usr/bin/mariadb-install-db")


@dataclass
class MariaDB:
    """A running MariaDB: its port, its user and password, and its process."""

    port: int
    user: str
    password: str
    folder: Path
    run_as: str | None
    process: subprocess.Popen | None = None

    def url(self, database: str = "flows", password: bool = True) -> str:
        """A SQLAlchemy URL (PyMySQL), with or without the password."""
        secret = f":{self.password}" if password else ""
        return (
            f"mysql+pymysql://{self.user}{secret}@127.0.0.1:{self.port}/{database}"
            "?charset=utf8mb4"
        )

    def _command(self) -> list[str]:
        data = self.folder / "data"
        command = [
            str(MARIADBD), "--no-defaults", f"--datadir={data}",
            f"--socket={self.folder / 'socket'}", f"--port={self.port}",
            "--bind-address=127.0.0.1", f"--pid-file={self.folder / 'pid'}",
            f"--log-error={self.folder / 'log'}", "--skip-log-bin",
            "--innodb-buffer-pool-size=128M", "--local-infile=1",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
        ]  # fmt: skip
        if self.run_as:
            command.append(f"--user={self.run_as}")
        return command

    def start(self) -> None:
        """Start the server; returns once it accepts the user's logins."""
        # pylint: disable-next=consider-using-with  # stopped by stop()
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for_port(self.process, self.port, "mariadbd", self.folder / "log")

    def stop(self, kill: bool = False) -> None:
        """Shut the server down (SIGTERM: it closes every session), or kill it."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=START_TIMEOUT_SECONDS)
        self.process = None

    def restart(self) -> None:
        """Shut down and start again on the same port, as an administrator would."""
        self.stop()
        self.start()

    def admin(self, statement: str) -> None:
        """Run `statement` as the server's root, through its socket."""
        _run(
            ["mariadb", "--no-defaults", f"--socket={self.folder / 'socket'}",
             "-uroot", "-e", statement],
        )  # fmt: skip


@contextlib.contextmanager
def running_mariadb() -> Iterator[MariaDB]:
    """mariadb-install-db into a temporary folder, start on 127.0.0.1 with a user
    `flows` and a database `flows`, stop and remove at the end. As root the server
    runs as the `mysql` user the package made."""
    if not MARIADBD.exists():
        raise ServiceUnavailable(f"MariaDB is not installed ({MARIADBD})")
    run_as = "mysql" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="flows-mariadb-"))
    server = MariaDB(free_port(), "flows", "flows-test-password", folder, run_as)
    try:
        if run_as:
            entry = pwd.getpwnam(run_as)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        install = [
            str(MARIADB_INSTALL_DB),
            "--no-defaults",
            f"--datadir={folder / 'data'}",
        ]
        install += ["--auth-root-authentication-method=normal", "--skip-test-db"]
        if run_as:
            install.append(f"--user={run_as}")
        _run(install)
        server.start()
        try:
            server.admin(
                f"CREATE USER '{server.user}'@'127.0.0.1' IDENTIFIED BY "
                f"'{server.password}'; GRANT ALL ON *.* TO '{server.user}'@'127.0.0.1';"
                " CREATE DATABASE flows CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
            )
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


SMBD = Path("/usr/sbin/smbd")


@dataclass
class Smbd:
    """A running smbd: its port, the share `drop` and its folder, its user."""

    port: int
    user: str
    password: str
    share_dir: Path
    folder: Path
    process: subprocess.Popen | None = None
    share: str = "drop"

    def config(self) -> Path:
        """The server's smb.conf."""
        return self.folder / "smb.conf"

    def start(self) -> None:
        """Start smbd in the foreground; returns once its port answers."""
        # pylint: disable-next=consider-using-with  # stopped by stop()
        self.process = subprocess.Popen(
            [str(SMBD), "--foreground", "--no-process-group", "--debug-stdout",
             f"--configfile={self.config()}"],
            stdout=open(self.folder / "log", "ab"),  # pylint: disable=consider-using-with
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait_for_port(self.process, self.port, "smbd", self.folder / "log")

    def stop(self) -> None:
        """Kill the server and every session it serves, as a crash would."""
        if self.process is not None:
            _kill_tree(self.process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            self.process = None


def _smb_config(server: Smbd, read_only: bool) -> str:
    state = server.folder
    return "\n".join(
        [
            "[global]",
            f"smb ports = {server.port}",
            "interfaces = 127.0.0.1",
            "bind interfaces only = yes",
            f"private dir = {state / 'private'}",
            f"lock directory = {state / 'lock'}",
            f"state directory = {state / 'state'}",
            f"cache directory = {state / 'cache'}",
            f"pid directory = {state / 'pid'}",
            f"ncalrpc dir = {state / 'ncalrpc'}",
            f"passdb backend = tdbsam:{state / 'private' / 'passdb.tdb'}",
            "server role = standalone server",
            "map to guest = never",
            "server min protocol = SMB2_10",
            "server signing = mandatory",
            "disable spoolss = yes",
            "load printers = no",
            "log level = 1",
            f"[{server.share}]",
            f"path = {server.share_dir}",
            f"read only = {'yes' if read_only else 'no'}",
            f"valid users = {server.user}",
            "",
        ]
    )


@contextlib.contextmanager
def running_smbd(read_only: bool = False) -> Iterator[Smbd]:
    """smbd on 127.0.0.1 and a free port, a share `drop` of a temporary folder, a
    user with a password (NTLM, signing required); stopped and removed at the end.
    Its user is the Unix account running the tests (root here): Samba maps each of
    its users to one."""
    if not SMBD.exists():
        raise ServiceUnavailable(f"Samba is not installed ({SMBD})")
    folder = Path(tempfile.mkdtemp(prefix="flows-smbd-"))
    share_dir = folder / "share"
    for name in ("share", "private", "lock", "state", "cache", "pid", "ncalrpc"):
        (folder / name).mkdir()
    server = Smbd(
        free_port(), getpass.getuser(), "flows-smb-password", share_dir, folder
    )
    try:
        server.config().write_text(_smb_config(server, read_only), encoding="utf-8")
        _run(
            [
                "pdbedit",
                f"--configfile={server.config()}",
                "-a",
                "-t",
                "-u",
                server.user,
            ],
            input=f"{server.password}\n{server.password}\n",
        )
        with _running(server):
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)
