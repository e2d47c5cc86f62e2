"""The real node's only way out: CONNECT to the package registries, and nothing else."""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator

import pytest

from testbed.egress import EgressProxy

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def proxy() -> Iterator[EgressProxy]:
    # An upstream of our own on loopback stands for a registry.
    server = EgressProxy("127.0.0.1", allowed=frozenset({"127.0.0.1"}))
    server.start()
    yield server
    server.stop()


def ask(proxy: EgressProxy, request: str) -> str:
    host, port = proxy.server_address[:2]
    with socket.create_connection((str(host), port), timeout=5) as connection:
        connection.sendall(request.encode())
        return connection.recv(1024).decode()


def test_other_hosts_are_refused_and_recorded(proxy: EgressProxy) -> None:
    answer = ask(proxy, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert answer.startswith("HTTP/1.1 403")
    assert proxy.refused == ["example.com:443"]


def test_only_https_ports_and_connect_are_served(proxy: EgressProxy) -> None:
    assert ask(proxy, "CONNECT 127.0.0.1:80 HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 403")
    assert ask(proxy, "GET http://127.0.0.1/ HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 405")
    assert proxy.refused == ["127.0.0.1:80"]


def test_a_burst_of_connections_waits_in_the_accept_queue() -> None:
    """Concurrent builds open dozens of connections at once: beyond the accept queue a SYN is
    dropped and the client waits seconds to retry (npm stalled a build that way)."""
    server = EgressProxy("127.0.0.1")  # listening, not yet accepting
    host, port = server.server_address[:2]
    with contextlib.ExitStack() as stack:
        pending = []
        for _ in range(64):
            client = stack.enter_context(socket.socket())
            client.setblocking(False)
            client.connect_ex((str(host), port))
            pending.append(client)
        # The handshake completes at once on loopback unless the SYN was dropped.
        _, connected, _ = select.select([], pending, [], 0.5)
        assert len(connected) == len(pending)
    server.server_close()
