"""A real TCP proxy on 127.0.0.1 in front of a test server, that injects real faults.

It forwards bytes both ways, and on request:
- answers the first `throttle` requests itself with an HTTP status and body (S3's
  `503 SlowDown`, say), as a throttling server does, and closes that connection;
- cuts a connection (both sockets closed, as a broken network does) once
  `cut_after_bytes` have gone towards the server since the start or the last cut,
  over however many connections: `cuts` times;
- or cuts it right after forwarding a piece towards the server that holds
  `cut_after_pattern` (PostgreSQL's `COMMIT`, say): the server gets the request,
  the client never gets the answer.
Every fault is counted, so a test can say how many requests met one.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

from services import free_port

SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_PIECE = 64 * 1024
# How long a server gets to act on the request a pattern cut forwarded.
_SERVER_SECONDS = 0.5


@dataclass
class FaultProxy:  # pylint: disable=too-many-instance-attributes
    """A proxy to 127.0.0.1:`upstream_port`; start() it, then use `url`."""

    upstream_port: int
    throttle: int = 0
    throttle_status: bytes = b"503 Slow Down"
    throttle_body: bytes = SLOW_DOWN_BODY
    cut_after_bytes: int | None = None
    cut_after_pattern: bytes | None = None
    cuts: int = 1
    port: int = field(default_factory=free_port)
    throttled: int = 0
    cut: int = 0
    connections: int = 0
    carried: int = 0  # towards the server since the start or the last cut
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None
    _open: list = field(default_factory=list)

    @property
    def url(self) -> str:
        """The proxy's http:// address."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        """Listen, and serve each connection in a thread of its own."""
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listener and every open connection."""
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in list(self._open):
            _close(sock)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            with self._lock:
                self.connections += 1
                throttle = self.throttled < self.throttle
                if throttle:
                    self.throttled += 1
            handler = self._answer_throttled if throttle else self._forward
            threading.Thread(target=handler, args=(client,), daemon=True).start()

    def _answer_throttled(self, client: socket.socket) -> None:
        """Read the request's head (and body, unless it waits for 100-continue),
        answer with the throttle status, close."""
        with client:
            head = _read_head(client)
            body_read = len(head) - head.find(b"\r\n\r\n") - 4
            if b"100-continue" not in head.lower():
                _discard(client, _content_length(head) - body_read)
            client.sendall(
                b"HTTP/1.1 " + self.throttle_status + b"\r\n"
                b"Content-Type: application/xml\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(self.throttle_body)).encode() + b"\r\n"
                b"\r\n" + self.throttle_body
            )

    def _forward(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._open += [client, upstream]
        muted = threading.Event()  # this connection's answers no longer pass
        threading.Thread(
            target=self._pump, args=(upstream, client, False, muted), daemon=True
        ).start()
        self._pump(client, upstream, True, muted)

    def _pump(self, source, target, towards_server: bool, muted: threading.Event):
        try:
            while piece := source.recv(_PIECE):
                if not towards_server and muted.is_set():
                    break  # the answer to the pattern's request never arrives
                cutting = towards_server and self._due_a_cut(piece)
                if cutting and self.cut_after_pattern is not None:
                    muted.set()
                target.sendall(piece)
                if cutting:
                    if muted.is_set():
                        time.sleep(_SERVER_SECONDS)  # the server does what it got
                    break  # the cut: both sockets closed below
        except OSError:
            pass
        _close(source)
        _close(target)

    def _due_a_cut(self, piece: bytes) -> bool:
        with self._lock:
            self.carried += len(piece)
            if self.cut >= self.cuts:
                return False
            if self.cut_after_pattern is not None:
                if self.cut_after_pattern not in piece:
                    return False
            elif self.cut_after_bytes is None or self.carried < self.cut_after_bytes:
                return False
            self.cut += 1
            self.carried = 0
            return True


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        piece = sock.recv(4096)
        if not piece:
            break
        head += piece
    return head


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _discard(sock: socket.socket, length: int) -> None:
    """Read what is left of a body of `length` bytes after its head."""
    sock.settimeout(5)
    remaining = length
    with contextlib.suppress(OSError):
        while remaining > 0:
            piece = sock.recv(min(_PIECE, remaining))
            if not piece:
                return
            remaining -= len(piece)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
