"""SFTP through paramiko: verified host keys, atomic uploads, retries on network faults.

Uploads go to a temporary name beside the target (`.<name>.part-<id>`), their size is
checked, and only then are they renamed to the final name: a partner never sees a
partial file. Some managed drop boxes take a file the moment it lands and refuse stat
and rename; for those set `atomic_uploads` to false on the connection block, knowing
that an interrupted upload may then leave a partial file at the final name.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import paramiko
from prefect import task
from prefect.blocks.core import Block
from prefect.blocks.system import Secret

from toolkit.prefect_majors import Field
from toolkit import retries
from toolkit.logs import run_logger
from toolkit.streams import CHUNK_BYTES, CountingWriter, Progress

_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class HostKeyRefused(retries.PermanentFailure, paramiko.SSHException):
    """The server's host key is not among the connection's known_hosts lines."""


class RenameRefused(retries.PermanentFailure, OSError):
    """The server answered the rename of a finished upload with a refusal."""


class SftpConnection(Block):
    """A partner's SFTP server: address, login, and the host key to expect."""

    _block_type_name = "Flows SFTP Connection"
    _description = "Host, login and known_hosts lines of an SFTP server."

    host: str = Field(..., description="Server name or address.")
    port: int = Field(22, description="SSH port.")
    username: str = Field(..., description="Login name.")
    password: Optional[Secret] = Field(None, description="Secret holding a password.")
    private_key: Optional[Secret] = Field(
        None, description="Secret holding a private key (OpenSSH or PEM text)."
    )
    known_hosts: str = Field(
        ...,
        description="The server's lines from known_hosts (`ssh-keyscan -p PORT HOST`,"
        " checked with the partner); any other host key is refused.",
    )
    remote_dir: str = Field(".", description="Folder that relative paths start from.")
    atomic_uploads: bool = Field(
        True,
        description="Upload to a temporary name, check the size, then rename. Turn "
        "off only for drop boxes that refuse stat or rename.",
    )
    timeout_seconds: float = Field(30, description="Connect and read timeout.")

    def remote_path(self, path: str) -> str:
        """`path` resolved against remote_dir."""
        return posixpath.join(self.remote_dir, path)

    def describe(self) -> str:
        """user@host:port, for logs and errors; never a secret."""
        return f"{self.username}@{self.host}:{self.port}"


class _RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):  # pylint: disable=R0903
    """paramiko's RejectPolicy, with an error that says what to do."""

    def missing_host_key(self, client, hostname, key):
        fingerprint = key.fingerprint
        raise HostKeyRefused(
            f"host key of {hostname} ({key.get_name()} {fingerprint}) is not in the "
            "connection's known_hosts: check it with the partner, then add its line"
        )


def _load_private_key(text: str) -> paramiko.PKey:
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text))
        except paramiko.SSHException:
            continue
    raise paramiko.AuthenticationException(
        "the private key is not an Ed25519, ECDSA or RSA key this client can read"
    )


def _trust_known_hosts(client: paramiko.SSHClient, known_hosts: str) -> None:
    host_keys = client.get_host_keys()
    for line in known_hosts.splitlines():
        entry = paramiko.hostkeys.HostKeyEntry.from_line(line.strip())
        if entry is not None and entry.key is not None:
            for hostname in entry.hostnames:
                host_keys.add(hostname, entry.key.get_name(), entry.key)


@contextlib.contextmanager
def open_sftp(connection: SftpConnection) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session to `connection`, host key verified, closed when done."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_RefuseUnknownHostKey())
    _trust_known_hosts(client, connection.known_hosts)
    key = connection.private_key
    try:
        client.connect(
            connection.host,
            port=connection.port,
            username=connection.username,
            password=connection.password.get() if connection.password else None,
            pkey=_load_private_key(key.get()) if key else None,
            timeout=connection.timeout_seconds,
            banner_timeout=connection.timeout_seconds,
            auth_timeout=connection.timeout_seconds,
            look_for_keys=False,
            allow_agent=False,
        )
    except paramiko.AuthenticationException as error:
        client.close()
        raise paramiko.AuthenticationException(
            f"SFTP login as {connection.describe()} refused ({error}): check the "
            "username and the password or private key of the connection block"
        ) from error
    except BaseException:
        client.close()
        raise
    try:
        sftp = client.open_sftp()
        sftp.get_channel().settimeout(connection.timeout_seconds)
        yield sftp
    finally:
        client.close()


def make_remote_dirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    """Create `directory` and its missing parents."""
    if directory in ("", ".", "/"):
        return
    try:
        sftp.stat(directory)
        return
    except FileNotFoundError:
        pass
    make_remote_dirs(sftp, posixpath.dirname(directory.rstrip("/")))
    try:
        sftp.mkdir(directory)
    except OSError:
        sftp.stat(directory)  # made meanwhile by someone else: fine; else re-raise


@contextlib.contextmanager
def remote_writer(
    sftp: paramiko.SFTPClient,
    remote_path: str,
    atomic: bool = True,
    progress: Progress | None = None,
) -> Iterator[CountingWriter]:
    """A binary stream to `remote_path`, in place only when the block succeeds.

    After an atomic upload the writer's `checked_size` is the size the server
    reported for the file before it was renamed.
    """
    directory, name = posixpath.split(remote_path)
    make_remote_dirs(sftp, directory)
    target = (
        posixpath.join(directory, f".{name}.part-{uuid.uuid4().hex[:8]}")
        if atomic
        else remote_path
    )
    remote_file = sftp.open(target, "wb", bufsize=CHUNK_BYTES)
    remote_file.set_pipelined(True)
    writer = CountingWriter(remote_file, progress)
    try:
        yield writer
        remote_file.close()  # waits for every pipelined write's answer
    except BaseException:
        with contextlib.suppress(Exception):
            remote_file.close()
        # A dead connection cannot flush: stop paramiko retrying at garbage collection.
        remote_file._closed = True  # pylint: disable=protected-access
        if atomic:
            with contextlib.suppress(Exception):
                sftp.remove(target)
        raise
    if atomic:
        writer.checked_size = _check_and_rename(
            sftp, target, remote_path, writer.bytes_written
        )
        _remove_stale_parts(sftp, directory, name)


def _remove_stale_parts(sftp: paramiko.SFTPClient, directory: str, name: str) -> None:
    """Remove what interrupted uploads of `name` left behind (they cannot resume)."""
    prefix = f".{name}.part-"
    for entry in sftp.listdir(directory or "."):
        if entry.startswith(prefix):
            with contextlib.suppress(OSError):
                sftp.remove(posixpath.join(directory, entry))


def _check_and_rename(sftp, temporary: str, final: str, expected_size: int) -> int:
    """Rename `temporary` to `final` if the server holds every byte; its size.

    A server that answers the rename with a refusal gets the temporary file removed:
    RenameRefused, which no retry mends. A refused posix-rename leaves the file at
    the final name as it was.
    """
    size = sftp.stat(temporary).st_size
    if size != expected_size:
        sftp.remove(temporary)
        raise OSError(
            f"{temporary} holds {size} bytes, {expected_size} were sent: not renamed"
        )
    try:
        _rename_over(sftp, temporary, final)
    except OSError as error:
        if not _session_alive(sftp):
            raise  # the connection broke: a retry's upload removes this one's part
        with contextlib.suppress(OSError):
            sftp.remove(temporary)
        raise RenameRefused(
            f"the SFTP server refused to rename {temporary} to {final} "
            f"({error.strerror or error}): nothing was delivered; ask the partner to "
            "allow renames there, or set atomic_uploads to false on the SFTP block"
        ) from error
    return size


def _rename_over(sftp: paramiko.SFTPClient, temporary: str, final: str) -> None:
    """Rename, replacing an old `final`: in one step where the server can."""
    try:
        sftp.posix_rename(temporary, final)
    except PermissionError:
        raise  # refused, not unknown: the old file must stay
    except OSError:
        # Servers without the posix-rename extension refuse to rename over a file.
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(final)
        sftp.rename(temporary, final)


def _session_alive(sftp: paramiko.SFTPClient) -> bool:
    """Whether the SFTP session still stands: an error then was the server's answer."""
    channel = sftp.get_channel()
    return not channel.closed and channel.get_transport().is_active()


def copy_stream(source: BinaryIO, destination) -> int:
    """Copy `source` to `destination` in large chunks; bytes copied."""
    copied = 0
    while chunk := source.read(CHUNK_BYTES):
        destination.write(chunk)
        copied += len(chunk)
    return copied


# The names flows imported before every source's faults were classified in one place.
is_transient_failure = retries.is_transient_failure
NETWORK_RETRIES = retries.TRANSIENT_RETRIES


@task(**retries.TRANSIENT_RETRIES)
def upload_file(connection: SftpConnection, local_path: str, remote_path: str) -> int:
    """Upload a local file; bytes uploaded."""
    target = connection.remote_path(remote_path)
    with open(local_path, "rb") as source, open_sftp(connection) as sftp:
        with remote_writer(sftp, target, connection.atomic_uploads) as writer:
            copy_stream(source, writer)
    run_logger().info(
        "uploaded %s (%d bytes) to %s:%s",
        local_path,
        writer.bytes_written,
        connection.describe(),
        target,
    )
    return writer.bytes_written


@task(**retries.TRANSIENT_RETRIES)
def upload_bytes(connection: SftpConnection, data: bytes, remote_path: str) -> int:
    """Upload `data` as one file; bytes uploaded."""
    target = connection.remote_path(remote_path)
    with open_sftp(connection) as sftp:
        with remote_writer(sftp, target, connection.atomic_uploads) as writer:
            writer.write(data)
    run_logger().info(
        "uploaded %d bytes to %s:%s", len(data), connection.describe(), target
    )
    return len(data)


@task(**retries.TRANSIENT_RETRIES)
def download_file(connection: SftpConnection, remote_path: str, local_path: str) -> int:
    """Download to `local_path`, which appears only once complete; bytes downloaded."""
    final = Path(local_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        with open_sftp(connection) as sftp:
            with sftp.open(connection.remote_path(remote_path), "rb") as source:
                source.prefetch()
                with open(partial, "wb") as destination:
                    size = copy_stream(source, destination)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return size


@task(**retries.TRANSIENT_RETRIES)
def list_files(connection: SftpConnection, remote_dir: str = ".") -> list[str]:
    """Names in a remote folder, sorted; temporary upload names left out."""
    with open_sftp(connection) as sftp:
        names = sftp.listdir(connection.remote_path(remote_dir))
    return sorted(name for name in names if ".part-" not in name)
