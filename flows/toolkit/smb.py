"""Windows file shares (SMB 2 and 3) through smbprotocol: a delivery sink, and a drop
folder that is also a source of files.

    connection = SmbConnection.load("registrar-smb-main")
    deliver_frame(SmbSink(connection), frame, "enrolments.csv")
    reports = pick_up_and_load(SmbDropFolder(connection, "incoming"), target, plan)

The block holds the server, the share, the domain and the login (NTLM), its password
in a Secret block; `setup --smb SYSTEM` makes it. Signing is used whenever the server
asks for it, and `encrypt` requires encryption of every message (SMB 3); a share the
server marks as encrypted is encrypted either way. A delivered file is written under
a temporary name beside its final one, its size checked on the server, then renamed
into place: it appears whole or not at all. A drop folder's claim and move are one
SMB rename each, which never replaces a file. Network faults are retried (toolkit.
retries); a refused login, a missing file or a share that refuses writes are not.
The password is never in a log line or an error.
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import stat
import uuid
from datetime import datetime, timezone
from typing import BinaryIO, Iterator, Optional

import smbclient
from smbprotocol.exceptions import SMBAuthenticationError, SMBConnectionClosed
from prefect.blocks.core import Block
from prefect.blocks.system import Secret

from toolkit.prefect_majors import Field
from toolkit.pickup import DroppedFile, SessionFolder, name_matches
from toolkit.streams import CHUNK_BYTES, CountingWriter, Progress


class SmbConnection(Block):
    """A share on an SMB server (a Windows file server, Samba, a NAS)."""

    _block_type_name = "Flows SMB Connection"

    host: str = Field(description="Server name or address.")
    share: str = Field(description="The share's name (\\\\host\\SHARE).")
    port: int = Field(445, description="SMB port.")
    domain: str = Field("", description="Windows domain of the login (empty: none).")
    username: str = Field(description="Login name.")
    password: Optional[Secret] = Field(None, description="The login's password.")
    remote_dir: str = Field("", description="Folder in the share (/ separated).")
    encrypt: bool = Field(False, description="Require encryption (SMB 3).")
    atomic_uploads: bool = Field(
        True, description="Write under a temporary name, then rename into place."
    )
    timeout_seconds: float = Field(60, description="Connect timeout.")

    def path(self, name: str = "") -> str:
        """`name` (/ separated, below remote_dir) as a UNC path."""
        # pylint: disable-next=no-member  # a field's value once made
        parts = [p for p in posixpath.join(self.remote_dir, name).split("/") if p]
        return "\\\\" + "\\".join([self.host, self.share, *parts])

    def describe(self, name: str = "") -> str:
        """smb://host:port/share/dir/name, for logs and the ledger; never a secret."""
        where = posixpath.join(self.share, self.remote_dir, name).rstrip("/")
        return f"smb://{self.host}:{self.port}/{where}"

    def login(self) -> str:
        """The NTLM user name, with its domain when there is one."""
        return f"{self.domain}\\{self.username}" if self.domain else self.username

    @contextlib.contextmanager
    def session(self) -> Iterator[dict]:
        """Keyword arguments for smbclient's calls on a session of this block's own,
        closed at the end."""
        cache: dict = {}
        # pylint: disable-next=no-member  # a Secret block once the block is made
        password = self.password.get() if self.password is not None else None
        smbclient.register_session(
            self.host,
            username=self.login(),
            password=password,
            port=self.port,
            encrypt=self.encrypt,
            connection_timeout=int(self.timeout_seconds),
            connection_cache=cache,
        )
        try:
            yield {"port": self.port, "connection_cache": cache}
        finally:
            with contextlib.suppress(Exception):
                smbclient.reset_connection_cache(connection_cache=cache)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


# NTSTATUS codes smbprotocol leaves without an errno: a refusal is a PermissionError.
_NTSTATUS_ERRNOS = {
    0xC0000022: errno.EACCES,  # STATUS_ACCESS_DENIED: a share that refuses writes
    0xC00000A2: errno.EACCES,  # STATUS_MEDIA_WRITE_PROTECTED
    0xC000007F: errno.ENOSPC,  # STATUS_DISK_FULL
}


def _plain(error: OSError) -> OSError:
    """smbprotocol's OSError as Python's own kind of it (FileNotFoundError,
    FileExistsError, PermissionError...), which the drop folder's callers and the
    retry rules know; else the error as it is."""
    number = error.errno or _NTSTATUS_ERRNOS.get(getattr(error, "ntstatus", None))
    plain = OSError(number, error.strerror, error.filename)
    return error if plain.__class__ is OSError else plain


def _listing(path: str, **call) -> list:
    """The entries of a folder, read whole: scandir reads as it is iterated, and
    its errors belong inside the call."""
    return list(smbclient.scandir(path, **call))


@contextlib.contextmanager
def _plain_errors() -> Iterator[None]:
    try:
        yield
    except OSError as error:
        plain = _plain(error)
        if plain is error:
            raise
        raise plain from error


class SmbSink:  # pylint: disable=too-few-public-methods
    """Files below the connection's remote_dir on its share: a delivery sink."""

    def __init__(self, connection: SmbConnection):
        self.connection = connection

    def describe(self, file_name: str) -> str:
        """Where `file_name` ends up."""
        return self.connection.describe(file_name)

    @contextlib.contextmanager
    def open(
        self, file_name: str, progress: Progress | None = None
    ) -> Iterator[CountingWriter]:
        """A binary stream that becomes `file_name` only if the block succeeds."""
        connection = self.connection
        final = connection.path(file_name)
        parent, base = posixpath.split(file_name)
        temporary = (
            connection.path(
                posixpath.join(parent, f".{base}.part-{uuid.uuid4().hex[:8]}")
            )
            if connection.atomic_uploads
            else final
        )
        # contextmanager always closes this generator, and so the blocks below.
        # pylint: disable=contextmanager-generator-missing-cleanup
        with _plain_errors(), connection.session() as call:
            if parent:
                smbclient.makedirs(connection.path(parent), exist_ok=True, **call)
            try:
                with smbclient.open_file(temporary, mode="wb", **call) as remote:
                    stream = CountingWriter(remote, progress)
                    yield stream
                written = stream.bytes_written
                size = smbclient.stat(temporary, **call).st_size
                if size != written:
                    raise OSError(
                        errno.EIO,
                        f"{connection.describe(file_name)}: the server holds {size:,} "
                        f"bytes of the {written:,} written: not delivered",
                    )
                if temporary != final:
                    smbclient.replace(temporary, final, **call)
            except BaseException:
                if temporary != final:
                    with contextlib.suppress(Exception):
                        smbclient.remove(temporary, **call)
                raise


class SmbDropFolder(SessionFolder):
    """A folder on a share where a partner drops files: the drop-folder protocol of
    pickup.py. One session serves the calls of a run: opened at the first call,
    opened again if it broke, closed by close() or `with`."""

    def __init__(self, connection: SmbConnection, folder: str = ""):
        super().__init__()
        self.connection = connection
        self.folder = folder.strip("/")

    def _open_session(self, session: contextlib.ExitStack) -> dict:
        return session.enter_context(self.connection.session())

    def _run(self, function, *arguments, **keywords):
        """`function` on this folder's session; once more on a new session if the
        old one broke (a server restarted between two calls of a run)."""
        with _plain_errors():
            try:
                return function(*arguments, **keywords, **self._session_handle())
            except (
                ConnectionError,
                EOFError,
                SMBConnectionClosed,
                # A connection the server dropped (a restart) is made again by
                # smbclient without the login: the session must be made anew.
                SMBAuthenticationError,
            ):
                self.close()
                return function(*arguments, **keywords, **self._session_handle())

    def _path(self, name: str) -> str:
        return self.connection.path(posixpath.join(self.folder, name))

    def describe(self) -> str:
        """smb://host:port/share/dir/folder, the ledger's source."""
        return self.connection.describe(self.folder)

    def _entries(self, under: str):
        try:
            return self._run(_listing, self._path(under))
        except FileNotFoundError:
            if not under:
                raise
            return []  # a subfolder not made yet (a claim folder) holds nothing

    def list_files(self, pattern: str, under: str = "") -> list[DroppedFile]:
        """Files directly here (or in `under`) whose name matches `pattern`."""
        found = []
        for entry in self._entries(under):
            # Links are not followed (nor listed): a planted one leads nowhere.
            if entry.is_file(follow_symlinks=False) and name_matches(
                entry.name, pattern
            ):
                # Size and time as file_info reads them, to the same precision:
                # a claim compares the two.
                listed = self.file_info(posixpath.join(under, entry.name))
                if listed is not None:
                    found.append(listed)
        return sorted(found, key=lambda dropped: dropped.name)

    def list_folders(self, under: str) -> list[str]:
        """The folders directly in `under`."""
        return sorted(
            e.name for e in self._entries(under) if e.is_dir(follow_symlinks=False)
        )

    def file_info(self, name: str) -> DroppedFile | None:
        """`name` as listed, or None."""
        try:
            info = self._run(smbclient.stat, self._path(name))
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return DroppedFile(posixpath.basename(name), info.st_size, _utc(info.st_mtime))

    def open_file(self, name: str) -> BinaryIO:
        """A streaming binary reader of `name`."""
        return self._run(
            smbclient.open_file, self._path(name), mode="rb", buffering=CHUNK_BYTES
        )

    def exists(self, name: str) -> bool:
        """Whether `name` (relative: a file or a folder) exists; one stat."""
        try:
            self._run(smbclient.stat, self._path(name))
        except FileNotFoundError:
            return False
        return True

    def move(self, name: str, destination: str) -> None:
        """Move `name` to `destination`, making its folders; FileExistsError if it
        exists: an SMB rename never replaces a file unless asked to."""
        parent = posixpath.dirname(destination)
        if parent:
            self._run(smbclient.makedirs, self._path(parent), exist_ok=True)
        self._run(smbclient.rename, self._path(name), self._path(destination))

    def take(self, name: str, destination: str) -> None:
        """Rename `name` to `destination`: one rename on the server."""
        self.move(name, destination)

    def remove(self, name: str) -> None:
        """Remove `name`."""
        self._run(smbclient.remove, self._path(name))

    def remove_folder(self, name: str) -> None:
        """Remove the folder `name` if it is empty."""
        with contextlib.suppress(OSError):
            self._run(smbclient.rmdir, self._path(name))
