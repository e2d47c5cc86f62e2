"""WebSocket frames (RFC 6455) on a socket that transport.Http.upgrade() opened: what the
exec streams of the Kubernetes API travel in. A client's frames are masked; pings are answered;
a message split over continuation frames is joined, up to a bound.

One thread drives the socket, reading and writing as it becomes ready: OpenSSL forbids using
one TLS connection from two threads at once, and the API server drops a stream that a
concurrent read and write damaged (a command fed from a thread then lost its output and
exit status, a few times in a hundred)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
from collections.abc import Iterator

from k8scc.errors import K8sccError

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# The API server sends what a command prints in frames of a few KiB; a message this large is
# not one of them.
MAX_MESSAGE = 16 * 1024 * 1024
# Bytes handed to one send or taken by one receive: what a socket moves at once.
SEND_BYTES = RECEIVE_BYTES = 256 * 1024
# Once the stream is done, this long to hand the server what is still queued.
FLUSH_SECONDS = 2.0
_NOT_READY = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class WebSocketError(K8sccError):
    """The stream broke, or the server sent what RFC 6455 does not allow."""


def _frame(payload: bytes, opcode: int) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + mask + _masked(payload, mask)


class WebSocket:
    """The client's end. `idle_seconds`: how long the stream may neither take nor give a
    byte before it counts as dead."""

    def __init__(self, sock: socket.socket, idle_seconds: float) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.idle_seconds = idle_seconds
        self.closed = False
        self._incoming = bytearray()
        # A TLS write that could not finish is repeated with the same bytes: `_writing`
        # holds them apart from the frames queued behind.
        self._writing = b""
        self._outgoing = bytearray()
        self._source: Iterator[bytes] | None = None

    def send(self, payload: bytes, opcode: int = BINARY) -> None:
        """Queues one whole frame; it leaves while receive() waits, or at close()."""
        self._outgoing += _frame(payload, opcode)

    def send_from(self, messages: Iterator[bytes]) -> None:
        """Sends each message of `messages` in turn, taking the next only once the socket has
        taken most of those before: a large input never sits in memory whole."""
        self._source = messages

    def _fill(self) -> None:
        while self._source is not None and len(self._outgoing) < SEND_BYTES:
            message = next(self._source, None)
            if message is None:
                self._source = None
            else:
                self.send(message)

    def _pump(self) -> None:
        """Waits until the socket can move bytes, then reads what arrived and writes what it
        takes."""
        self._fill()
        sending = bool(self._writing or self._outgoing)
        buffered = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
        events = select.POLLIN
        if not buffered:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN | (select.POLLOUT if sending else 0))
            ready = poller.poll(self.idle_seconds * 1000)
            if not ready:
                raise WebSocketError(f"nothing moved on the stream for {self.idle_seconds:g} s")
            events = ready[0][1]
        # A hang-up or an error is read: as the end of the stream, or as the error itself.
        if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
            self._read()
        if events & select.POLLOUT:
            self._write()

    def _read(self) -> None:
        try:
            chunk = self.sock.recv(RECEIVE_BYTES)
        except _NOT_READY:
            return
        if not chunk:
            if self._incoming:
                raise WebSocketError("the stream ended in the middle of a frame")
            raise WebSocketError("the server ended the stream without closing it")
        self._incoming += chunk

    def _write(self) -> None:
        if not self._writing:
            self._writing = bytes(self._outgoing[:SEND_BYTES])
            del self._outgoing[:SEND_BYTES]
        try:
            sent = self.sock.send(self._writing)
        except _NOT_READY:
            return
        self._writing = self._writing[sent:]

    def _parse(self) -> tuple[bool, int, bytes] | None:
        """The next whole frame among the bytes received, or None until it has all arrived."""
        data = self._incoming
        if len(data) < 2:
            return None
        first, second = data[0], data[1]
        length, start = second & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                return None
            (length,), start = struct.unpack_from("!H", data, 2), 4
        elif length == 127:
            if len(data) < 10:
                return None
            (length,), start = struct.unpack_from("!Q", data, 2), 10
        if length > MAX_MESSAGE:
            raise WebSocketError(f"a frame of {length} bytes is more than a stream carries")
        if second & 0x80:
            raise WebSocketError("the server sent a masked frame, which RFC 6455 forbids")
        end = start + length
        if len(data) < end:
            return None
        payload = bytes(data[start:end])
        del data[:end]
        return bool(first & 0x80), first & 0x0F, payload

    def _next_frame(self) -> tuple[bool, int, bytes]:
        while (frame := self._parse()) is None:
            try:
                self._pump()
            except OSError as error:
                raise WebSocketError(f"the stream broke: {error}") from None
        return frame

    def receive(self) -> bytes | None:
        """The next data message, or None once the server has closed the stream. What is
        queued to send goes out meanwhile."""
        message = b""
        while True:
            final, opcode, payload = self._next_frame()
            if opcode == PING:
                self.send(payload, PONG)
                continue
            if opcode == PONG:
                continue
            if opcode == CLOSE:
                if not self.closed:
                    self.closed = True
                    self.send(payload[:2], CLOSE)
                return None
            if opcode not in (CONTINUATION, TEXT, BINARY):
                raise WebSocketError(f"unknown WebSocket opcode {opcode}")
            message += payload
            if len(message) > MAX_MESSAGE:
                raise WebSocketError("a message longer than a stream carries")
            if final:
                return message

    def close(self) -> None:
        """Says goodbye (unless the server did first), hands over what is queued, within
        FLUSH_SECONDS, and closes the socket. The server may be gone; nothing is lost."""
        if not self.closed:
            self.closed = True
            self.send(struct.pack("!H", 1000), CLOSE)
        with contextlib.suppress(OSError):
            self.sock.settimeout(FLUSH_SECONDS)
            self.sock.sendall(self._writing + self._outgoing)
        self.sock.close()


def _masked(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeating 4-byte mask, done on whole integers rather than byte by byte."""
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    size = len(payload)
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")
