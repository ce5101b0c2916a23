"""Sinks for delivered files (a local folder, an SFTP server, S3) and the tasks that
fill them.

Every sink writes atomically: a file appears at its final name complete, or not at all.
Three ways from a query to a delivered CSV, cheapest last:
- `deliver_frame`: a DataFrame you have already shaped with pandas;
- `deliver_query_in_chunks`: a large result shaped chunk by chunk, memory bounded;
- `deliver_query_as_is`: no shaping at all; the database writes the CSV (COPY).
And from a paged REST API, `deliver_api_pages`: page by page, memory bounded.
All three write numbers exactly and each column in one format (arrow_csv's), so the
same query gives the same numbers and times whichever path delivers it.
Each logs its progress while data moves, a last line when the file is in place, and
in a run a table artifact of what it delivered; `summarize_deliveries` makes the
flow's own table of every file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Protocol

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext

from toolkit import arrow_csv
from toolkit import database
from toolkit import rest
from toolkit import retries
from toolkit import sftp
from toolkit.logs import run_logger
from toolkit.streams import MEGABYTE, PROGRESS_SECONDS, CountingWriter, Progress


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery did, for logs and the run's artifact."""

    file: str
    rows: int
    bytes: int
    location: str
    seconds: float = 0.0
    # The size the SFTP server reported before the rename (atomic uploads only).
    checked_size: int | None = None

    @property
    def megabytes_per_second(self) -> float:
        """Average speed of the whole delivery, query and login included."""
        return self.bytes / MEGABYTE / self.seconds if self.seconds > 0 else 0.0

    def table_row(self) -> dict[str, Any]:
        """One line of an artifact's table; the location holds no secret."""
        return {
            "file": self.file,
            "rows": self.rows,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 2),
            "MB/s": round(self.megabytes_per_second, 1),
            "destination": self.location,
            "remote size checked": (
                "" if self.checked_size is None else self.checked_size
            ),
        }


@dataclass(frozen=True)
class LocalFolderSink:
    """Files in a local folder: the embedded default for `env=dev`."""

    folder: str

    def describe(self, file_name: str) -> str:
        """Where `file_name` ends up."""
        return str(Path(self.folder) / file_name)

    @contextlib.contextmanager
    def open(
        self, file_name: str, progress: Progress | None = None
    ) -> Iterator[CountingWriter]:
        """A binary stream that becomes `file_name` only if the block succeeds."""
        final = Path(self.folder) / file_name
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.part-{uuid.uuid4().hex[:8]}")
        try:
            with open(partial, "wb") as file:
                stream = CountingWriter(file, progress)
                yield stream
            os.replace(partial, final)
            # What killed runs left of this file: they cannot resume, as on SFTP.
            for stale in final.parent.glob(f".{glob.escape(final.name)}.part-*"):
                stale.unlink(missing_ok=True)
        except OSError as error:
            if error.errno not in retries.FULL_DISK_ERRNOS:
                raise
            # The writer's error names no file: say which, and that nothing is left.
            raise OSError(
                error.errno,
                f"{error.strerror} writing {final}: nothing was delivered; free"
                " space there, then run again",
            ) from error
        finally:
            partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class SftpSink:
    """Files on an SFTP server, below the connection's remote_dir."""

    connection: sftp.SftpConnection

    def describe(self, file_name: str) -> str:
        """Where `file_name` ends up."""
        path = self.connection.remote_path(file_name)
        return f"sftp://{self.connection.describe()}/{path.lstrip('/')}"

    @contextlib.contextmanager
    def open(
        self, file_name: str, progress: Progress | None = None
    ) -> Iterator[CountingWriter]:
        """A binary stream that becomes `file_name` only if the block succeeds."""
        path = self.connection.remote_path(file_name)
        atomic = self.connection.atomic_uploads
        # contextmanager always closes this generator, and so both blocks below.
        # pylint: disable=contextmanager-generator-missing-cleanup
        with sftp.open_sftp(self.connection) as session:
            with sftp.remote_writer(session, path, atomic, progress) as stream:
                yield stream


class Sink(Protocol):
    """Where delivered files go: LocalFolderSink, SftpSink, object_storage.S3Sink.
    A protocol, so that delivering to a folder or SFTP never imports S3's client."""

    def describe(self, file_name: str) -> str:
        """Where `file_name` ends up; never a secret."""

    def open(
        self, file_name: str, progress: Progress | None = None
    ) -> ContextManager[CountingWriter]:
        """A binary stream that becomes `file_name` only if the block succeeds."""


def _in_a_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _record_artifact(report: DeliveryReport) -> None:
    """The delivery's table artifact, in a run only (scripts call the tasks' .fn)."""
    if not _in_a_run():
        return
    try:
        create_table_artifact(
            table=[report.table_row()],
            description=f"{report.file} delivered to {report.location}",
        )
    # The file is delivered: failing the task now would only make a retry send it
    # again, so a missing artifact is a warning.
    except Exception as error:  # pylint: disable=broad-exception-caught
        run_logger().warning("no artifact for %s: %s", report.file, error)


def _finish(
    sink: Sink, progress: Progress, stream: CountingWriter, rows: int
) -> DeliveryReport:
    """The delivery's report, its last log line and its artifact."""
    report = DeliveryReport(
        progress.file_name,
        rows,
        stream.bytes_written,
        sink.describe(progress.file_name),
        progress.seconds(),
        stream.checked_size,
    )
    checked = "" if report.checked_size is None else ", size checked on the server"
    run_logger().info(
        "delivered %s: %s rows, %.1f MB (%d bytes) in %.1f s, %.1f MB/s%s, to %s",
        report.file,
        f"{report.rows:,}",
        report.bytes / MEGABYTE,
        report.bytes,
        report.seconds,
        report.megabytes_per_second,
        checked,
        report.location,
    )
    _record_artifact(report)
    return report


def summarize_deliveries(
    reports: Iterable[DeliveryReport],
    key: str | None = None,
    description: str | None = None,
) -> uuid.UUID | None:
    """The flow's table artifact of every file it delivered; call it at the flow's end.

    `key` (lowercase letters, digits, dashes) puts the table on the UI's Artifacts
    page, one version per run. Outside a run nothing is made and None is returned.
    """
    reports = list(reports)
    if not _in_a_run():
        return None
    total_rows = sum(report.rows for report in reports)
    total_megabytes = sum(report.bytes for report in reports) / MEGABYTE
    return create_table_artifact(
        table=[report.table_row() for report in reports],
        key=key,
        description=description
        or f"{len(reports)} files, {total_rows:,} rows, {total_megabytes:,.1f} MB",
    )


@task(**retries.TRANSIENT_RETRIES)
def deliver_frame(
    sink: Sink,
    frame: pd.DataFrame,
    file_name: str,
    *,
    progress_seconds: float = PROGRESS_SECONDS,
) -> DeliveryReport:
    """Deliver one DataFrame as a CSV file."""
    progress = Progress(file_name, run_logger(), progress_seconds)
    with sink.open(file_name, progress) as stream:
        arrow_csv.write_frames_as_csv([frame], stream, progress)
    return _finish(sink, progress, stream, len(frame))


@task(**retries.TRANSIENT_RETRIES)
def deliver_query_in_chunks(  # pylint: disable=too-many-arguments
    source: database.DatabaseConnection,
    query: str,
    sink: Sink,
    file_name: str,
    *,
    parameters: dict[str, Any] | None = None,
    transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    chunk_rows: int = database.DEFAULT_CHUNK_ROWS,
    progress_seconds: float = PROGRESS_SECONDS,
) -> DeliveryReport:
    """Query, shape each chunk with `transform`, deliver one CSV; memory stays bounded.

    `transform` sees one chunk at a time: use it for row-wise work (renaming, types,
    derived columns), not for totals across the whole result. A retry runs the query
    again, so nothing is half-delivered.
    """
    progress = Progress(file_name, run_logger(), progress_seconds)
    frames = database.iterate_query_frames(source, query, parameters, chunk_rows)
    if transform is not None:
        frames = map(transform, frames)
    with sink.open(file_name, progress) as stream:
        rows = arrow_csv.write_frames_as_csv(frames, stream, progress)
    return _finish(sink, progress, stream, rows)


@task(**retries.TRANSIENT_RETRIES)
def deliver_query_as_is(  # pylint: disable=too-many-arguments
    source: database.DatabaseConnection,
    query: str,
    sink: Sink,
    file_name: str,
    *,
    parameters: dict[str, Any] | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
) -> DeliveryReport:
    """The fast path for extracts that need no shaping: the rows go straight to CSV."""
    progress = Progress(file_name, run_logger(), progress_seconds)
    with sink.open(file_name, progress) as stream:
        rows = database.copy_query_as_csv(source, query, stream, parameters, progress)
    return _finish(sink, progress, stream, rows)


@task(**retries.TRANSIENT_RETRIES)
def deliver_api_pages(  # pylint: disable=too-many-arguments
    connection: rest.ApiConnection,
    path: str,
    sink: Sink,
    file_name: str,
    *,
    records: str | list[str] | None = None,
    paging: rest.Paging | None = None,
    params: dict[str, Any] | None = None,
    columns: list[str] | None = None,
    transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
    max_pages: int = rest.DEFAULT_MAX_PAGES,
) -> DeliveryReport:
    """Every page of a REST API's GET `path` as one CSV; memory stays one page.

    The file's columns are `columns`, else the first page's (see rest.aligned);
    `transform` sees one page at a time, as in deliver_query_in_chunks. A retry reads
    the API again from the first page, so nothing is half-delivered.
    """
    progress = Progress(file_name, run_logger(), progress_seconds)
    frames = rest.aligned_pages(
        connection, path, records, paging, params, columns, max_pages
    )
    if transform is not None:
        frames = map(transform, frames)
    with sink.open(file_name, progress) as stream:
        rows = arrow_csv.write_frames_as_csv(frames, stream, progress)
    return _finish(sink, progress, stream, rows)
