"""The API server's end of a WebSocket, for unit tests: frames written and read from RFC 6455
section 5.2 rather than from k8scc's module, over a socket pair."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, NamedTuple, TypeVar

from k8scc.websocket import WebSocket

WAIT = 10.0  # seconds a helper thread may take before the test fails rather than hangs
T = TypeVar("T")


def xor(payload: bytes, mask: bytes) -> bytes:
    """Masking byte by byte, exactly as RFC 6455 section 5.3 states it."""
    return bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def encode(
    opcode: int, payload: bytes = b"", *, final: bool = True, mask: bytes | None = None
) -> bytes:
    """One frame as a server writes it (unmasked unless `mask`)."""
    size = len(payload)
    first = (0x80 if final else 0) | opcode
    bit = 0x80 if mask is not None else 0
    if size < 126:
        head = bytes([first, bit | size])
    elif size < 1 << 16:
        head = bytes([first, bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, bit | 127]) + struct.pack("!Q", size)
    return head + (payload if mask is None else mask + xor(payload, mask))


class Frame(NamedTuple):
    final: bool
    opcode: int
    payload: bytes  # unmasked
    length_code: int  # the 7-bit length field: the length itself, 126 or 127
    wire: bytes  # the masked payload as it travelled


class Peer:
    """The API server's end of the socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(
        self, opcode: int, payload: bytes = b"", *, final: bool = True, mask: bytes | None = None
    ) -> None:
        self.send(encode(opcode, payload, final=final, mask=mask))

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self.sock.recv(1 << 20)
            assert chunk, f"wanted {size} bytes, the client closed after {len(self._buffer)}"
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_frame(self) -> Frame:
        """The client's next frame; fails the test unless it is masked."""
        first, second = self._exactly(2)
        assert second & 0x80, f"the client sent an unmasked frame (opcode {first & 0x0F})"
        code = length = second & 0x7F
        if code == 126:
            (length,) = struct.unpack("!H", self._exactly(2))
        elif code == 127:
            (length,) = struct.unpack("!Q", self._exactly(8))
        mask = self._exactly(4)
        wire = self._exactly(length)
        return Frame(bool(first & 0x80), first & 0x0F, xor(wire, mask), code, wire)

    def at_end(self) -> bool:
        """True once the client has closed its end and nothing unread is left."""
        return not self._buffer and self.sock.recv(1) == b""


class Background(Generic[T]):
    """`work` in a thread; result() joins it with a bound and hands back its value or error."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._values: list[T] = []
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self._values.append(work())
        except BaseException as error:
            self._errors.append(error)

    def result(self, timeout: float = WAIT) -> T:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the helper thread still runs after {timeout}s"
        if self._errors:
            raise self._errors[0]
        return self._values[0]


@contextmanager
def connected() -> Iterator[tuple[WebSocket, Peer]]:
    """A client WebSocket and the server's end, both bounded so a bug fails, not hangs."""
    client, server = socket.socketpair()
    server.settimeout(WAIT)
    try:
        yield WebSocket(client, WAIT), Peer(server)
    finally:
        client.close()
        server.close()
