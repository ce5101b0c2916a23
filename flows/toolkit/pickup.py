"""Drop folders: where partners leave files, and how a run takes only complete ones.

A drop folder is a local folder, an SFTP folder, or an S3 prefix (toolkit.object_storage
implements the last with the same methods). Each lists the files directly in it by a
glob pattern, streams one with bounded memory, and moves one to a name below it
(`processed/<day>/x.csv`, `failed/x.csv`) without ever overwriting.

A file is complete ("settled") when its marker file is present (`x.csv.done`, for
partners that write one), or else when its size and modification time did not change
across a settle interval. A file still growing is left for the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import os
import posixpath
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Iterator, Protocol

import paramiko

from toolkit import retries
from toolkit.logs import run_logger
from toolkit.sftp import SftpConnection, make_remote_dirs, open_sftp
from toolkit.streams import CHUNK_BYTES

# Bytes an SFTP read asks for ahead of what the load has consumed: paramiko's
# prefetch of a whole file would hold all of it in memory when the load is slower.
SFTP_READ_AHEAD_BYTES = 8 * CHUNK_BYTES


@dataclass(frozen=True)
class DroppedFile:
    """A file in a drop folder as listed: its name relative to the folder, size in
    bytes, and modification time (timezone-aware UTC)."""

    name: str
    size: int
    modified: datetime


class DropFolder(Protocol):
    """Where a partner drops files: a local folder, an SFTP folder, an S3 prefix."""

    def describe(self) -> str:
        """Where the folder is ("sftp://host:22/incoming", "/data/drop"): the
        ledger's source."""

    def list_files(self, pattern: str, under: str = "") -> list[DroppedFile]:
        """Files directly in the folder (or its subfolder `under`) whose name
        matches the glob `pattern`; names relative to where they were listed."""

    def list_folders(self, under: str) -> list[str]:
        """The names of the folders directly in the subfolder `under`; none if
        `under` does not exist."""

    def file_info(self, name: str) -> DroppedFile | None:
        """`name` (relative) as a listing shows it, or None if it is not there."""

    def open_file(self, name: str) -> ContextManager[BinaryIO]:
        """A streaming binary reader of `name`, bounded in memory."""

    def exists(self, name: str) -> bool:
        """Whether `name` (relative, may include a subfolder) exists."""

    def move(self, name: str, destination: str) -> None:
        """Move `name` to `destination` (relative), creating its parent folders;
        FileExistsError if `destination` exists: never overwrites."""

    def take(self, name: str, destination: str) -> None:
        """Rename `name` to `destination` (a name of the caller's own claim folder,
        free) in one step where the backend can: of two runs taking one file, one
        gets FileNotFoundError."""

    def remove(self, name: str) -> None:
        """Remove `name`."""

    def remove_folder(self, name: str) -> None:
        """Remove the folder `name` if it is empty; else leave it."""


def name_matches(name: str, pattern: str) -> bool:
    """Glob match as a shell does it: a leading dot (hidden, or a partial upload
    such as `.x.csv.part-1a2b`) is matched only by a pattern that starts with one."""
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def printable(name: str) -> str:
    """`name` with each control character (a newline a partner put in a file name,
    say) written as its escape: one file, one line of a log or a table."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


class UnsafePath(retries.PermanentFailure, PermissionError):
    """A name in a drop folder that is a symbolic link, or passes through one: no
    retry changes that."""


class LocalDropFolder:
    """A folder on this machine (or a mounted share).

    A partner who may write into the folder (an SFTP chroot on the same host, say)
    may also plant symbolic links there. None is followed: a file is opened only if
    it is a regular file under its own name, and the subfolders a move writes into
    (`processed/<day>`, `failed`) are entered one at a time without following a
    link, so a run never reads or writes outside the folder through one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()

    def describe(self) -> str:
        """The folder's address, the ledger's source."""
        return str(self.path)

    def list_files(self, pattern: str, under: str = "") -> list[DroppedFile]:
        """Files directly here (or in `under`) whose name matches `pattern`."""
        found = []
        try:
            with self._folder(under) as folder, os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False) and name_matches(
                        entry.name, pattern
                    ):
                        info = entry.stat(follow_symlinks=False)
                        found.append(
                            DroppedFile(entry.name, info.st_size, _utc(info.st_mtime))
                        )
        except FileNotFoundError:
            if not under:
                raise
            # A subfolder not made yet (a claim folder) holds nothing.
        return sorted(found, key=lambda dropped: dropped.name)

    def list_folders(self, under: str) -> list[str]:
        """The folders directly in `under` (never a link to one)."""
        try:
            with self._folder(under) as folder, os.scandir(folder) as entries:
                return sorted(
                    entry.name
                    for entry in entries
                    if entry.is_dir(follow_symlinks=False)
                )
        except FileNotFoundError:
            return []

    def file_info(self, name: str) -> DroppedFile | None:
        """`name` as listed (a link is not followed), or None."""
        parent, base = posixpath.split(name)
        try:
            with self._folder(parent) as folder:
                info = os.stat(base, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return DroppedFile(base, info.st_size, _utc(info.st_mtime))

    @contextlib.contextmanager
    def _folder(self, relative: str, create: bool = False) -> Iterator[int]:
        """A descriptor of the subfolder `relative` ("" for the folder itself),
        entered part by part without following a link; made if `create`."""
        descriptor = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in Path(relative).parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=descriptor)
                try:
                    inner = os.open(
                        part,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                        dir_fd=descriptor,
                    )
                except OSError as error:
                    if error.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafePath(
                            f"{self.path / relative}: {part} is not a folder of "
                            "the drop folder (a symbolic link?): refused"
                        ) from error
                    raise
                os.close(descriptor)
                descriptor = inner
            yield descriptor
        finally:
            os.close(descriptor)

    @contextlib.contextmanager
    def _parents(self, name: str, destination: str) -> Iterator[tuple[int, int]]:
        """Descriptors of the folders of `name` and of `destination` (made if
        missing), for a move between them that follows no link."""
        with self._folder(posixpath.dirname(name)) as source, self._folder(
            posixpath.dirname(destination), create=True
        ) as target:
            yield source, target

    def open_file(self, name: str) -> ContextManager[BinaryIO]:
        """A streaming binary reader of `name`, a regular file under that name."""
        parent, base = posixpath.split(name)
        with self._folder(parent) as folder:
            try:
                descriptor = os.open(base, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise UnsafePath(
                        f"{self.path / name} is a symbolic link: not read"
                    ) from error
                raise
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise UnsafePath(f"{self.path / name} is not a regular file: not read")
        return os.fdopen(descriptor, "rb", buffering=CHUNK_BYTES)

    def exists(self, name: str) -> bool:
        """Whether `name` (relative) exists; a link is not followed."""
        return os.path.lexists(self.path / name)

    def move(self, name: str, destination: str) -> None:
        """Move `name` to `destination`; FileExistsError if it exists."""
        source, target = posixpath.basename(name), posixpath.basename(destination)
        with self._parents(name, destination) as (source_fd, target_fd):
            try:
                # A hard link fails on an existing name, in one step: never
                # overwrites. It links a planted link itself, never its target.
                os.link(
                    source,
                    target,
                    src_dir_fd=source_fd,
                    dst_dir_fd=target_fd,
                    follow_symlinks=False,
                )
            except FileExistsError:
                raise
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                    raise
                # A file system without hard links: check, then rename.
                if _lexists_in(target, target_fd):
                    raise FileExistsError(
                        errno.EEXIST, "destination exists", destination
                    ) from error
                os.rename(source, target, src_dir_fd=source_fd, dst_dir_fd=target_fd)
                return
            os.unlink(source, dir_fd=source_fd)

    def take(self, name: str, destination: str) -> None:
        """Rename `name` to `destination`, one system call: one run gets the file."""
        source, target = posixpath.basename(name), posixpath.basename(destination)
        with self._parents(name, destination) as (source_fd, target_fd):
            os.rename(source, target, src_dir_fd=source_fd, dst_dir_fd=target_fd)

    def remove(self, name: str) -> None:
        """Remove `name` (a link itself, never its target)."""
        parent, base = posixpath.split(name)
        with self._folder(parent) as folder:
            os.unlink(base, dir_fd=folder)

    def remove_folder(self, name: str) -> None:
        """Remove the folder `name` if it is empty."""
        parent, base = posixpath.split(name)
        with contextlib.suppress(OSError), self._folder(parent) as folder:
            os.rmdir(base, dir_fd=folder)


def _lexists_in(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


class _SftpReader(contextlib.AbstractContextManager):
    """A raw reader of a remote file that asks for SFTP_READ_AHEAD_BYTES at a time
    in pipelined requests: fast as a prefetch, bounded in memory whatever the size."""

    def __init__(self, remote_file: paramiko.SFTPFile, size: int):
        self._file = remote_file
        self._size = size
        self._offset = 0
        self._pending: Iterator[bytes] = iter(())

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (a whole window's piece when -1); b"" at the end."""
        piece = next(self._pending, None)
        if piece is None:
            if self._offset >= self._size:
                return b""  # the size listed: bytes a partner adds later wait
            window = min(SFTP_READ_AHEAD_BYTES, self._size - self._offset)
            chunks = [
                (start, min(CHUNK_BYTES, self._offset + window - start))
                for start in range(self._offset, self._offset + window, CHUNK_BYTES)
            ]
            self._offset += window
            self._pending = iter(self._file.readv(chunks))
            piece = next(self._pending, b"")
        if 0 < size < len(piece):
            rest = piece[size:]
            self._pending = _prepend(rest, self._pending)
            return piece[:size]
        return piece

    def __exit__(self, *exc_info) -> None:
        self._file.close()


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


class SessionFolder:
    """A remote drop folder whose calls in a run share one session: opened at the
    first call (`_open_session`), opened again if it broke, closed by close() or
    `with`."""

    def __init__(self):
        self._session: contextlib.ExitStack | None = None
        self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the session, if one is open."""
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.close()
        self._session = self._handle = None

    def _open_session(self, session: contextlib.ExitStack):
        """The handle of a new session, its closing registered on `session`."""
        raise NotImplementedError

    def _session_handle(self):
        """The open session's handle, a new session's when none is open."""
        if self._handle is None:
            session = contextlib.ExitStack()
            self._handle = self._open_session(session)
            self._session = session
        return self._handle


class SftpDropFolder(SessionFolder):
    """A folder on an SFTP server. One session serves the calls of a run: opened at
    the first call, opened again if it broke, closed by close() or `with`."""

    def __init__(self, connection: SftpConnection, folder: str = "."):
        super().__init__()
        self.connection = connection
        self.folder = folder

    def _open_session(self, session: contextlib.ExitStack) -> paramiko.SFTPClient:
        return session.enter_context(open_sftp(self.connection))

    def _client(self) -> paramiko.SFTPClient:
        if self._handle is not None:
            channel = self._handle.get_channel()
            if channel.closed or not channel.get_transport().is_active():
                self.close()
        return self._session_handle()

    def _path(self, name: str) -> str:
        return posixpath.join(self.connection.remote_path(self.folder), name)

    def describe(self) -> str:
        """The folder's address, the ledger's source."""
        connection = self.connection
        where = posixpath.normpath(connection.remote_path(self.folder))
        return f"sftp://{connection.host}:{connection.port}/{where.lstrip('/')}"

    def list_files(self, pattern: str, under: str = "") -> list[DroppedFile]:
        """Files directly here (or in `under`) whose name matches `pattern`."""
        try:
            entries = self._client().listdir_attr(self._path(under))
        except FileNotFoundError:
            if not under:
                raise
            entries = []  # a subfolder not made yet (a claim folder) holds nothing
        found = [
            DroppedFile(entry.filename, entry.st_size, _utc(entry.st_mtime))
            for entry in entries
            if stat.S_ISREG(entry.st_mode or 0)
            and name_matches(entry.filename, pattern)
        ]
        return sorted(found, key=lambda dropped: dropped.name)

    def list_folders(self, under: str) -> list[str]:
        """The folders directly in `under`."""
        try:
            entries = self._client().listdir_attr(self._path(under))
        except FileNotFoundError:
            return []
        return sorted(e.filename for e in entries if stat.S_ISDIR(e.st_mode or 0))

    def file_info(self, name: str) -> DroppedFile | None:
        """`name` as listed, or None."""
        try:
            info = self._client().lstat(self._path(name))
        except FileNotFoundError:
            return None
        return DroppedFile(posixpath.basename(name), info.st_size, _utc(info.st_mtime))

    @contextlib.contextmanager
    def open_file(self, name: str) -> Iterator[BinaryIO]:
        """A streaming binary reader of `name`."""
        sftp = self._client()
        path = self._path(name)
        size = sftp.stat(path).st_size
        with _SftpReader(sftp.open(path, "rb", bufsize=CHUNK_BYTES), size) as reader:
            yield reader

    def exists(self, name: str) -> bool:
        """Whether `name` (relative) exists."""
        try:
            self._client().stat(self._path(name))
        except FileNotFoundError:
            return False
        return True

    def move(self, name: str, destination: str) -> None:
        """Move `name` to `destination`; FileExistsError if it exists."""
        sftp = self._client()
        target = self._path(destination)
        make_remote_dirs(sftp, posixpath.dirname(target))
        if self.exists(destination):
            raise FileExistsError(errno.EEXIST, "destination exists", target)
        # SFTP's plain rename refuses an existing target (OpenSSH links, then
        # unlinks): unlike posix-rename it never overwrites.
        sftp.rename(self._path(name), target)

    def take(self, name: str, destination: str) -> None:
        """Rename `name` to `destination`: one rename on the server."""
        sftp = self._client()
        target = self._path(destination)
        make_remote_dirs(sftp, posixpath.dirname(target))
        sftp.rename(self._path(name), target)

    def remove(self, name: str) -> None:
        """Remove `name`."""
        self._client().remove(self._path(name))

    def remove_folder(self, name: str) -> None:
        """Remove the folder `name` if it is empty."""
        with contextlib.suppress(OSError):
            self._client().rmdir(self._path(name))


@dataclass(frozen=True)
class Settled:
    """A listing sorted out: the files to take, and those left with the reason."""

    taken: list[DroppedFile]
    left: list[tuple[DroppedFile, str]]


def settle(
    folder: DropFolder,
    pattern: str,
    settle_seconds: float = 10.0,
    marker_suffix: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Settled:
    """The files of `folder` matching `pattern` that are complete.

    With `marker_suffix` (".done"), a file is complete when `<name><suffix>` is
    listed beside it. Else a file is complete when its size and modification time
    are the same after `settle_seconds`; one still growing is left, with a log line.
    """
    if marker_suffix:
        return _settle_by_marker(folder, pattern, marker_suffix)
    before = {dropped.name: dropped for dropped in folder.list_files(pattern)}
    if before and settle_seconds > 0:
        sleep(settle_seconds)
    after = {dropped.name: dropped for dropped in folder.list_files(pattern)}
    taken, left = [], []
    for name, first in sorted(before.items()):
        second = after.get(name)
        if second is None:
            continue  # gone meanwhile (another run took it): nothing to say
        if (second.size, second.modified) == (first.size, first.modified):
            taken.append(second)
        else:
            reason = (
                f"still growing ({first.size:,} then {second.size:,} bytes "
                f"over {settle_seconds:g} s): left for the next run"
            )
            run_logger().info("%s: %s", name, reason)
            left.append((second, reason))
    return Settled(taken, left)


def _settle_by_marker(folder: DropFolder, pattern: str, suffix: str) -> Settled:
    listed = folder.list_files(pattern)
    by_name = {dropped.name: dropped for dropped in listed}
    taken, left = [], []
    for dropped in listed:
        if dropped.name.endswith(suffix) and dropped.name[: -len(suffix)] in by_name:
            continue  # a marker matched by the pattern is not a file to load
        marker = by_name.get(dropped.name + suffix) or _listed(
            folder, dropped.name + suffix
        )
        # A marker older than its file belongs to an earlier upload of that name (a
        # run killed between moving the file and its marker leaves one): the file
        # now is a new upload, maybe under way, until its own marker comes.
        if marker is not None and marker.modified >= dropped.modified:
            taken.append(dropped)
            continue
        if marker is None:
            reason = f"no marker {dropped.name}{suffix} yet: left for the next run"
        else:
            reason = (
                f"its marker {marker.name} is older than the file (an earlier "
                "upload's): left until a new marker comes"
            )
        run_logger().info("%s: %s", dropped.name, reason)
        left.append((dropped, reason))
    return Settled(taken, left)


def _listed(folder: DropFolder, name: str) -> DroppedFile | None:
    """The folder's file `name` as listed (size and time), or None."""
    found = folder.list_files(glob.escape(name))
    return found[0] if found else None


def move_without_overwrite(
    folder: DropFolder, name: str, destination_dir: str, base: str | None = None
) -> str:
    """Move `name` into `destination_dir` (relative) as `base` (its own base name
    unless given); if that is taken there, as `<stem>.2<suffix>`, `.3`, ...: an
    earlier file is never overwritten. The destination used."""
    base = base or posixpath.basename(name)
    stem, suffix = posixpath.splitext(base)
    for attempt in range(1, 1000):
        candidate = base if attempt == 1 else f"{stem}.{attempt}{suffix}"
        destination = posixpath.join(destination_dir, candidate)
        try:
            folder.move(name, destination)
        except FileExistsError:
            continue
        return destination
    raise FileExistsError(errno.EEXIST, "no free name left", destination_dir)
