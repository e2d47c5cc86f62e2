"""The only way out of the real node's pod network: an HTTPS proxy (CONNECT only) on the node's
bridge address that reaches the package registries builds download from, and nothing else.

Pods have no default route (see testbed.realnode), so a builder that fetches Go modules or npm
packages is given HTTPS_PROXY, as behind an operator's egress proxy; names are resolved here,
on the host, so pods need no upstream DNS.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time

from testbed.relay import Server, splice

REGISTRIES = frozenset(
    {
        "proxy.golang.org",
        "sum.golang.org",
        "storage.googleapis.com",  # where proxy.golang.org redirects module zips
        "registry.npmjs.org",
        "repo.maven.apache.org",
        "repo1.maven.org",
    }
)


# How long a registry's resolved addresses are used before they are looked up again.
ADDRESS_SECONDS = 300.0


class _Addresses:
    """Each registry's addresses, looked up once for all CONNECTs and kept a while: this
    machine's resolver stalls 5 s on about one query in four when npm opens its dozen
    connections at once, which made every node build ~20 s slower in a pod than on the host."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, list[str]]] = {}

    def of(self, host: str) -> list[str]:
        with self._lock:  # one lookup at a time, so a burst of CONNECTs makes one query
            known = self._known.get(host)
            if known is not None and time.monotonic() < known[0]:
                return known[1]
            found = socket.getaddrinfo(host, 443, socket.AF_INET, socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(str(entry[4][0]) for entry in found))
            self._known[host] = (time.monotonic() + ADDRESS_SECONDS, addresses)
            return addresses


def _connect(addresses: _Addresses, host: str, attempts: int = 3) -> socket.socket | None:
    """A connection to the registry, tried again after a failure (on the next address, if
    it has several): bursts of parallel builds meet the odd refused or timed-out connect."""
    for attempt in range(attempts):
        try:
            candidates = addresses.of(host)
            address = candidates[attempt % len(candidates)]
            return socket.create_connection((address, 443), timeout=30)
        except OSError:
            if attempt + 1 < attempts:
                time.sleep(1)
    return None


class _Handler(socketserver.StreamRequestHandler):
    server: EgressProxy

    def handle(self) -> None:
        request = self.rfile.readline(8192).decode("latin-1").split()
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass
        if len(request) != 3 or request[0] != "CONNECT":
            self._reply("405 Method Not Allowed")
            return
        host, _, port = request[1].rpartition(":")
        if host not in self.server.allowed or port != "443":
            self.server.refused.append(request[1])
            self._reply("403 Forbidden")
            return
        upstream = _connect(self.server.addresses, host)
        if upstream is None:
            self.server.unreachable.append(request[1])
            self._reply("502 Bad Gateway")
            return
        with upstream:
            upstream.settimeout(None)
            self._reply("200 Connection Established")
            splice(self.connection, upstream)

    def _reply(self, status: str) -> None:
        self.wfile.write(f"HTTP/1.1 {status}\r\n\r\n".encode())
        self.wfile.flush()


class EgressProxy(Server):
    def __init__(self, address: str, allowed: frozenset[str] = REGISTRIES) -> None:
        super().__init__(address, _Handler)
        self.allowed = allowed
        self.addresses = _Addresses()
        # host:port of every refused CONNECT, for tests to see what a pod tried.
        self.refused: list[str] = []
        # host:port of every CONNECT whose registry could not be reached.
        self.unreachable: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]!s}:{self.port}"
