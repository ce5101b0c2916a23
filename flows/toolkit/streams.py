"""The stream adapter, chunk size and progress lines the sources and sinks share."""

from __future__ import annotations

import io
import logging
import math
import resource
import time
from pathlib import Path

# What a source hands to a sink at once (a COPY, a CSV stream, a file copy): large
# enough that the cost of one sink write (an SFTP request, a syscall) vanishes.
CHUNK_BYTES = 1 << 20
# A delivery logs where it is at least this often while data moves; a file done
# sooner gets its final line only.
PROGRESS_SECONDS = 30.0
# The clock is read once per this many bytes, never per write or row: a sink that
# moves 100 kB/s is still seen within a second, a fast one reads it rarely.
CLOCK_CHECK_BYTES = 64 * 1024
MEGABYTE = 1_000_000


class Progress:
    """How far one file has got: rows (where known), bytes, seconds; logged now and then.

    The writer that moves the bytes tells it every CLOCK_CHECK_BYTES; writers that
    know rows (a chunk of a DataFrame, a batch from a cursor) add them as they go. A
    database's own CSV (COPY) is counted in bytes only: its rows are known at the end.
    """

    def __init__(
        self,
        file_name: str,
        logger: logging.Logger | logging.LoggerAdapter,
        interval_seconds: float = PROGRESS_SECONDS,
    ):
        self.file_name = file_name
        self.rows: int | None = None
        self.bytes = 0
        self._logger = logger
        self._interval = interval_seconds
        self._started = time.monotonic()
        self._next_line = self._started + interval_seconds

    def start_counting_rows(self) -> None:
        """Called by a writer that counts rows, so that its first line says 0 rows."""
        self.rows = 0

    def add_rows(self, rows: int) -> None:
        """`rows` more rows have been handed to the writer."""
        self.rows = (self.rows or 0) + rows

    def moved(self, total_bytes: int) -> None:
        """The writer has moved `total_bytes` so far: log a line if one is due."""
        self.bytes = total_bytes
        now = time.monotonic()
        if now >= self._next_line:
            self._next_line = now + self._interval
            self._logger.info("%s", self.describe(now - self._started))

    def seconds(self) -> float:
        """Seconds since the delivery began (its query and login included)."""
        return time.monotonic() - self._started

    def describe(self, seconds: float) -> str:
        """The progress line: rows if counted, MB and MB/s so far."""
        megabytes = self.bytes / MEGABYTE
        rate = megabytes / seconds if seconds > 0 else 0.0
        if self.rows is None:
            moved = f"{megabytes:,.1f} MB so far (rows are counted at the end)"
        else:
            moved = f"{self.rows:,} rows, {megabytes:,.1f} MB so far"
        return f"{self.file_name}: {moved}, {rate:,.1f} MB/s, {seconds:,.1f} s"


class CountingWriter(io.RawIOBase):
    """A raw binary stream over any object with write(), counting what passes.

    Wrapped in io.BufferedWriter it turns many small writes (a database's one row at
    a time) into few large ones, in C, before they reach a slow sink. Given a
    Progress, it tells it the bytes moved every CLOCK_CHECK_BYTES: one comparison per
    write is all the progress lines cost the fast path.
    """

    def __init__(self, sink, progress: Progress | None = None):
        super().__init__()
        self._sink = sink
        self._progress = progress
        self._next_check = CLOCK_CHECK_BYTES if progress else math.inf
        self.bytes_written = 0
        # What the destination said it holds after the file was closed, where the
        # sink checks (an atomic SFTP upload stats its temporary file): else None.
        self.checked_size: int | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sink.write(bytes(data) if isinstance(data, memoryview) else data)
        self.bytes_written += len(data)
        if self.bytes_written >= self._next_check:
            self._next_check = self.bytes_written + CLOCK_CHECK_BYTES
            self._progress.moved(self.bytes_written)
        return len(data)


def peak_rss_bytes() -> int:
    """This process's peak resident memory, in bytes. Linux's VmHWM: it starts anew
    at exec, where ru_maxrss carries a parent's peak over fork and exec (a child
    of a large test process would report the parent's memory as its own)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:  # not Linux: ru_maxrss, in KiB on Linux and bytes on macOS
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kibibytes = status.split("VmHWM:", 1)[1].split()[0]
    return int(kibibytes) * 1024
