"""HTTP/1.1 answers as the API server frames them, and the ways an answer can be cut or bent:
each test writes raw bytes into one end of a socket pair and reads them with http1.py."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from k8scc.http1 import MAX_LINE_BYTES, ProtocolError, Response, Wire, send

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def answer(pair: tuple[socket.socket, socket.socket], raw: bytes, end: bool = True) -> Response:
    ours, theirs = pair
    theirs.sendall(raw)
    if end:
        theirs.shutdown(socket.SHUT_WR)
    return Response(Wire(ours))


def test_a_sized_answer_is_read_and_the_connection_kept(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
    raw = head + b'\r\n{"a":1}'
    response = answer(pair, raw + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert (response.status, response.getheader("content-type")) == (201, "application/json")
    assert not response.complete
    assert response.read() == b'{"a":1}'
    assert response.complete and not response.will_close


def test_the_next_answer_on_a_kept_connection_starts_where_the_last_ended(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 404 Not Found\r\n")
    theirs.sendall(b"Content-Length: 3\r\n\r\nxyz")
    wire = Wire(ours)
    assert Response(wire).read() == b"ab"
    second = Response(wire)
    assert (second.status, second.read()) == (404, b"xyz")
    assert not wire.buffered()


def test_a_chunked_answer_reads_as_lines_and_ends_at_the_last_chunk(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nline 1\r\n"
        b"a;ext=1\r\n\nline 2\nli\r\n"
        b"3\r\nne3\r\n"
        b"0\r\nTrailer: x\r\n\r\n"
        b"HTTP/1.1 200 OK\r\n"
    )
    response = answer(pair, raw, end=False)
    assert list(response) == [b"line 1\n", b"line 2\n", b"line3"]
    assert response.complete and not response.will_close


def test_readline_stops_at_its_limit(pair: tuple[socket.socket, socket.socket]) -> None:
    response = answer(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789\n")
    assert response.readline(4) == b"0123"
    assert response.readline(100) == b"456789\n"
    assert response.readline(100) == b""


def test_without_a_length_the_body_runs_to_the_end_of_the_connection(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    response = answer(pair, b"HTTP/1.0 200 OK\r\n\r\nall of it")
    assert response.will_close
    assert response.read() == b"all of it"


@pytest.mark.parametrize(
    ("head", "closes"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\n", True),
        (b"HTTP/1.0 200 OK\r\n", True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n", False),
        (b"HTTP/1.1 200 OK\r\n", False),
    ],
)
def test_whether_the_server_keeps_the_connection(
    pair: tuple[socket.socket, socket.socket], head: bytes, closes: bool
) -> None:
    response = answer(pair, head + b"Content-Length: 2\r\n\r\nok")
    assert response.read() == b"ok"
    assert response.will_close is closes


def test_an_interim_answer_is_skipped(pair: tuple[socket.socket, socket.socket]) -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    response = answer(pair, raw)
    assert (response.status, response.read()) == (200, b"x")


def test_a_switch_of_protocols_has_no_body_and_leaves_what_follows(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x82\x01a")
    wire = Wire(ours, receive_bytes=1)
    response = Response(wire)
    assert (response.status, response.read(), response.complete) == (101, b"", True)
    assert not wire.buffered()
    assert ours.recv(3) == b"\x82\x01a"


def test_repeated_header_fields_are_joined(pair: tuple[socket.socket, socket.socket]) -> None:
    raw = b"HTTP/1.1 200 OK\r\nWarning: a\r\nwarning: b\r\nContent-Length: 0\r\n\r\n"
    assert answer(pair, raw).getheader("Warning") == "a, b"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "ended in the middle of an answer"),
        (b"SSH-2.0-OpenSSH\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 OK\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5", "ended in the middle of an answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "not a header field"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "not a Content-Length"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 201, "too many header fields"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * (MAX_LINE_BYTES + 10), "too long"),
    ],
)
def test_a_bent_head_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket], raw: bytes, error: str
) -> None:
    with pytest.raises(ProtocolError, match=error):
        answer(pair, raw)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"Content-Length: 10\r\n\r\nshort", "ended before the answer's body did"),
        (b"Transfer-Encoding: chunked\r\n\r\n5\r\nab", "ended before the answer's body did"),
        (b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab", "not a chunk size"),
        (b"Transfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n", "longer than it said"),
        (b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", "ended in the middle of an answer"),
    ],
)
def test_a_cut_or_bent_body_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket], body: bytes, error: str
) -> None:
    response = answer(pair, b"HTTP/1.1 200 OK\r\n" + body)
    with pytest.raises(ProtocolError, match=error):
        response.read()


def test_a_request_goes_out_in_one_write_with_its_length(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(theirs.recv(65536)))
    reader.start()
    send(ours, "POST", "/api/v1/x?y=1", {"Host": "h:6443", "Accept": "application/json"}, b"{}")
    reader.join(5)
    assert received == [
        b"POST /api/v1/x?y=1 HTTP/1.1\r\nHost: h:6443\r\nAccept: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    ]
