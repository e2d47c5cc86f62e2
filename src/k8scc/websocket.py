"""WebSocket frames (RFC 6455) on a socket that transport.Http.upgrade() opened: what the
exec streams of the Kubernetes API travel in. A client's frames are masked; pings are answered;
a message split over continuation frames is joined, up to a bound."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading

from k8scc.errors import K8sccError

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# The API server sends what a command prints in frames of a few KiB; a message this large is
# not one of them.
MAX_MESSAGE = 16 * 1024 * 1024


class WebSocketError(K8sccError):
    """The stream broke, or the server sent what RFC 6455 does not allow."""


class WebSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._pending = bytearray()
        self._sending = threading.Lock()
        self.closed = False

    def send(self, payload: bytes, opcode: int = BINARY) -> None:
        """One whole frame; safe from two threads (one sending data, one answering pings)."""
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        with self._sending:
            self.sock.sendall(head + mask + _masked(payload, mask))

    def _exactly(self, size: int) -> bytes:
        while len(self._pending) < size:
            chunk = self.sock.recv(max(65536, size - len(self._pending)))
            if not chunk:
                raise WebSocketError("the stream ended in the middle of a frame")
            self._pending += chunk
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def _frame(self) -> tuple[bool, int, bytes]:
        first, second = self._exactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._exactly(8))
        if length > MAX_MESSAGE:
            raise WebSocketError(f"a frame of {length} bytes is more than a stream carries")
        mask = self._exactly(4) if second & 0x80 else b""
        payload = self._exactly(length)
        return bool(first & 0x80), first & 0x0F, _masked(payload, mask) if mask else payload

    def receive(self) -> bytes | None:
        """The next data message, or None once the server has closed the stream."""
        message = b""
        while True:
            try:
                final, opcode, payload = self._frame()
            except OSError as error:
                raise WebSocketError(f"the stream broke: {error}") from None
            if opcode == PING:
                self.send(payload, PONG)
                continue
            if opcode == PONG:
                continue
            if opcode == CLOSE:
                self._close_back(payload)
                return None
            if opcode not in (CONTINUATION, TEXT, BINARY):
                raise WebSocketError(f"unknown WebSocket opcode {opcode}")
            message += payload
            if len(message) > MAX_MESSAGE:
                raise WebSocketError("a message longer than a stream carries")
            if final:
                return message

    def _close_back(self, payload: bytes) -> None:
        if not self.closed:
            self.closed = True
            # The server may have gone already; nothing is lost.
            with contextlib.suppress(OSError):
                self.send(payload[:2], CLOSE)

    def close(self) -> None:
        self._close_back(struct.pack("!H", 1000))
        self.sock.close()


def _masked(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeating 4-byte mask, done on whole integers rather than byte by byte."""
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    size = len(payload)
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")
