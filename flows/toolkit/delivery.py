"""Sinks for delivered files (a local folder, an SFTP server) and the tasks that fill them.

Every sink writes atomically: a file appears at its final name complete, or not at all.
Three ways from a query to a delivered CSV, cheapest last:
- `deliver_frame`: a DataFrame you have already shaped with pandas;
- `deliver_query_in_chunks`: a large result shaped chunk by chunk, memory bounded;
- `deliver_query_as_is`: no shaping at all; the database writes the CSV (COPY).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
from prefect import task

from toolkit import arrow_csv
from toolkit import database
from toolkit import sftp
from toolkit.logs import run_logger
from toolkit.streams import CountingWriter


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery did, for logs and the run's artifact."""

    file: str
    rows: int
    bytes: int
    location: str


@dataclass(frozen=True)
class LocalFolderSink:
    """Files in a local folder: the embedded default for `env=dev`."""

    folder: str

    def describe(self, file_name: str) -> str:
        """Where `file_name` ends up."""
        return str(Path(self.folder) / file_name)

    @contextlib.contextmanager
    def open(self, file_name: str) -> Iterator[CountingWriter]:
        """A binary stream that becomes `file_name` only if the block succeeds."""
        final = Path(self.folder) / file_name
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.part-{uuid.uuid4().hex[:8]}")
        try:
            with open(partial, "wb") as file:
                stream = CountingWriter(file)
                yield stream
            os.replace(partial, final)
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
    def open(self, file_name: str) -> Iterator[CountingWriter]:
        """A binary stream that becomes `file_name` only if the block succeeds."""
        path = self.connection.remote_path(file_name)
        atomic = self.connection.atomic_uploads
        # contextmanager always closes this generator, and so both blocks below.
        # pylint: disable=contextmanager-generator-missing-cleanup
        with sftp.open_sftp(self.connection) as session:
            with sftp.remote_writer(session, path, atomic) as stream:
                yield stream


Sink = LocalFolderSink | SftpSink


def _report(sink: Sink, file_name: str, rows: int, size: int) -> DeliveryReport:
    report = DeliveryReport(file_name, rows, size, sink.describe(file_name))
    run_logger().info(
        "delivered %s: %d rows, %d bytes, to %s",
        file_name,
        rows,
        size,
        report.location,
    )
    return report


@task(**sftp.NETWORK_RETRIES)
def deliver_frame(sink: Sink, frame: pd.DataFrame, file_name: str) -> DeliveryReport:
    """Deliver one DataFrame as a CSV file."""
    with sink.open(file_name) as stream:
        arrow_csv.write_frames_as_csv([frame], stream)
    return _report(sink, file_name, len(frame), stream.bytes_written)


@task(**sftp.NETWORK_RETRIES)
def deliver_query_in_chunks(  # pylint: disable=too-many-arguments
    source: database.DatabaseConnection,
    query: str,
    sink: Sink,
    file_name: str,
    *,
    parameters: dict[str, Any] | None = None,
    transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    chunk_rows: int = database.DEFAULT_CHUNK_ROWS,
) -> DeliveryReport:
    """Query, shape each chunk with `transform`, deliver one CSV; memory stays bounded.

    `transform` sees one chunk at a time: use it for row-wise work (renaming, types,
    derived columns), not for totals across the whole result. A retry runs the query
    again, so nothing is half-delivered.
    """
    frames = database.iterate_query_frames(source, query, parameters, chunk_rows)
    if transform is not None:
        frames = map(transform, frames)
    with sink.open(file_name) as stream:
        rows = arrow_csv.write_frames_as_csv(frames, stream)
    return _report(sink, file_name, rows, stream.bytes_written)


@task(**sftp.NETWORK_RETRIES)
def deliver_query_as_is(
    source: database.DatabaseConnection,
    query: str,
    sink: Sink,
    file_name: str,
    *,
    parameters: dict[str, Any] | None = None,
) -> DeliveryReport:
    """The fast path for extracts that need no shaping: the rows go straight to CSV."""
    with sink.open(file_name) as stream:
        rows = database.copy_query_as_csv(source, query, stream, parameters)
    return _report(sink, file_name, rows, stream.bytes_written)
