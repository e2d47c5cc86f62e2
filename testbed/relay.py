"""TCP relays for the real node's pod network, which reaches the host at the bridge address
only: the API server, listening on loopback, is relayed there for pods that talk to it (a peer
in a pod, say), as a cluster's Service address would route it."""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading


def splice(one: socket.socket, other: socket.socket, idle: float = 300) -> None:
    """Copies bytes both ways until either end closes or both stay silent for `idle` s."""
    ends = [one, other]
    for end in ends:
        # Without it, Nagle's algorithm holds each small write for the peer's delayed ACK:
        # ~40 ms on every request/response turn of a kept-alive connection.
        end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        readable, _, _ = select.select(ends, [], [], idle)
        if not readable:
            return
        for end in readable:
            try:
                data = end.recv(65536)
                if data:
                    (other if end is one else one).sendall(data)
            except OSError:  # a reset, as when a pod is killed mid-connection
                return
            if not data:
                return


class _Handler(socketserver.BaseRequestHandler):
    server: TcpRelay

    def handle(self) -> None:
        try:
            upstream = socket.create_connection(self.server.upstream, timeout=10)
        except OSError:
            return
        with upstream:
            upstream.settimeout(None)
            splice(self.request, upstream)


class Server(socketserver.ThreadingTCPServer):
    """A threaded TCP server on `address`, on a port of its own, served from a thread."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default of 5 drops the SYNs of concurrent builds' connection bursts.
    request_queue_size = 256

    def __init__(self, address: str, handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__((address, 0), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        with contextlib.suppress(OSError):
            self.server_close()


class TcpRelay(Server):
    def __init__(self, address: str, upstream: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.upstream = upstream
