"""The stream adapter and chunk size the sources and sinks share."""

from __future__ import annotations

import io

# What a source hands to a sink at once (a COPY, a CSV stream, a file copy): large
# enough that the cost of one sink write (an SFTP request, a syscall) vanishes.
CHUNK_BYTES = 1 << 20


class CountingWriter(io.RawIOBase):
    """A raw binary stream over any object with write(), counting what passes.

    Wrapped in io.BufferedWriter it turns many small writes (a database's one row at
    a time) into few large ones, in C, before they reach a slow sink.
    """

    def __init__(self, sink):
        super().__init__()
        self._sink = sink
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sink.write(bytes(data) if isinstance(data, memoryview) else data)
        self.bytes_written += len(data)
        return len(data)
