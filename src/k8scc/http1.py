"""HTTP/1.1 on one socket, as far as k8scc's exchanges with the API server need it: a request
sent in one write, then the answer's status line, headers and body (by Content-Length, in
chunks, or up to the end of the connection), the body read as it arrives.

Why not http.client: importing it pulls in the email package, and the two are about a sixth of
`run`'s start-up, which every launch waits for (docs/performance.md). What the API server sends
is a small, well-defined part of HTTP/1.1; the unit tests script its edge cases.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

# A line of an answer's head, or a chunk's size line, longer than this is not from an API server.
MAX_LINE_BYTES = 64 * 1024
MAX_HEADERS = 200
RECEIVE_BYTES = 64 * 1024


class ProtocolError(Exception):
    """The answer is not HTTP/1.1 as k8scc reads it, or the connection ended in its middle."""


class Wire:
    """A connected socket and what was received on it but not consumed yet. `receive_bytes` 1
    reads nothing past what is asked for, for a socket another protocol takes over."""

    def __init__(self, sock: socket.socket, receive_bytes: int = RECEIVE_BYTES) -> None:
        self.sock = sock
        self._receive = receive_bytes
        self._buffer = bytearray()

    def buffered(self) -> bool:
        return bool(self._buffer)

    def _fill(self) -> bool:
        chunk = self.sock.recv(self._receive)
        self._buffer += chunk
        return bool(chunk)

    def _take(self, count: int) -> bytes:
        taken = bytes(self._buffer[:count])
        del self._buffer[:count]
        return taken

    def line(self) -> bytes:
        """The next line, its CRLF included."""
        searched = 0
        while (end := self._buffer.find(b"\n", searched)) < 0:
            if len(self._buffer) > MAX_LINE_BYTES:
                raise ProtocolError("a line of the answer is too long")
            searched = len(self._buffer)
            if not self._fill():
                raise ProtocolError("the connection ended in the middle of an answer")
        return self._take(end + 1)

    def some(self, most: int) -> bytes:
        """Up to `most` bytes, at least one; b"" once the connection has ended."""
        if not self._buffer and not self._fill():
            return b""
        return self._take(min(most, len(self._buffer)))


def send(
    sock: socket.socket, method: str, target: str, headers: dict[str, str], body: bytes | None
) -> None:
    lines = [
        f"{method} {target} HTTP/1.1",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b""))


class _Body(io.RawIOBase):
    """An answer's body as the wire delivers it: `length` bytes, or chunks, or (neither) all
    until the connection ends."""

    def __init__(self, wire: Wire, length: int | None, chunked: bool) -> None:
        super().__init__()
        self._wire = wire
        self._chunked = chunked
        self._left = 0 if chunked else length
        self._done = length == 0 and not chunked

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._done:
            return 0
        if self._chunked and self._left == 0:
            self._left = self._chunk_size()
            if self._left == 0:
                while self._wire.line() not in (b"\r\n", b"\n"):
                    pass  # trailer fields, which the API server does not send
                self._done = True
                return 0
        most = len(buffer) if self._left is None else min(len(buffer), self._left)
        data = self._wire.some(most)
        if not data:
            if self._left is None:
                self._done = True
                return 0
            raise ProtocolError("the connection ended before the answer's body did")
        buffer[: len(data)] = data
        if self._left is not None:
            self._left -= len(data)
            if self._left == 0 and self._chunked:
                if self._wire.line() not in (b"\r\n", b"\n"):
                    raise ProtocolError("a chunk of the answer is longer than it said")
            elif self._left == 0:
                self._done = True
        return len(data)

    def _chunk_size(self) -> int:
        size = self._wire.line().split(b";", 1)[0].strip()
        try:
            return int(size, 16)
        except ValueError:
            raise ProtocolError(f"not a chunk size: {size[:40]!r}") from None

    @property
    def done(self) -> bool:
        return self._done


class Response:
    """An answer: status, headers (names in lower case) and a body to read as a file."""

    def __init__(self, wire: Wire) -> None:
        self.version, self.status = _status_line(wire.line())
        while 100 <= self.status < 200 and self.status != 101:
            _headers(wire)  # an interim answer: the real one follows
            self.version, self.status = _status_line(wire.line())
        self.headers = _headers(wire)
        length, chunked = self._framing()
        self._raw = _Body(wire, length, chunked)
        self._body = io.BufferedReader(self._raw)
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        self.will_close = (
            "close" in tokens
            or (self.version == "HTTP/1.0" and "keep-alive" not in tokens)
            or (length is None and not chunked)
        )

    def _framing(self) -> tuple[int | None, bool]:
        if self.status in (101, 204, 304):
            return 0, False
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return None, True
        length = self.headers.get("content-length")
        if length is None:
            return None, False
        if not length.strip().isdigit():
            raise ProtocolError(f"not a Content-Length: {length[:40]!r}")
        return int(length), False

    def getheader(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def read(self, most: int = -1) -> bytes:
        """The body, or its first `most` bytes."""
        return self._body.read(most)

    def readline(self, limit: int = -1) -> bytes:
        return self._body.readline(limit)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    @property
    def complete(self) -> bool:
        """The whole body was read: the connection is at the start of the next answer."""
        return self._raw.done


def _status_line(line: bytes) -> tuple[str, int]:
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP answer: {line[:80]!r}")
    return parts[0], int(parts[1])


def _headers(wire: Wire) -> dict[str, str]:
    fields: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = wire.line().decode("latin-1").rstrip("\r\n")
        if not line:
            return fields
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ProtocolError(f"not a header field: {line[:80]!r}")
        key = name.strip().lower()
        fields[key] = f"{fields[key]}, {value.strip()}" if key in fields else value.strip()
    raise ProtocolError("the answer has too many header fields")
