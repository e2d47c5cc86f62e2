"""WebSocket frames (RFC 6455) over a socket pair whose other end plays the API server: it
writes frames unmasked and reads the client's, which must be masked. Lengths take the 7-, 16-
and 64-bit forms, fragments are joined, pings are answered, a close ends the stream, input is
sent while replies are read from one thread, and what the RFC forbids or the stream cannot
carry fails with one WebSocketError."""

from __future__ import annotations

import os
import socket
import ssl
import struct
from collections.abc import Iterator

import pytest
import trustme

from k8scc import websocket
from k8scc.websocket import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, WebSocket
from tests.unit.wspeer import WAIT, Background, Peer, connected, encode, xor

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture
def pair() -> Iterator[tuple[WebSocket, Peer]]:
    with connected() as ends:
        yield ends


def failure(stream: WebSocket) -> str:
    with pytest.raises(websocket.WebSocketError) as caught:
        stream.receive()
    return str(caught.value)


# -- sending -----------------------------------------------------------------------------------


def test_a_sent_frame_is_the_masked_hello_of_rfc_6455(
    pair: tuple[WebSocket, Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the RFC's mask, a text "Hello" is byte for byte the RFC's example 5.7; it leaves at
    close(), followed by a normal close."""
    stream, peer = pair
    monkeypatch.setattr(os, "urandom", lambda size: bytes.fromhex("37fa213d"))
    stream.send(b"Hello", TEXT)
    stream.close()
    assert peer._exactly(11) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert peer.read_frame().payload == struct.pack("!H", 1000)
    assert peer.at_end()


@pytest.mark.parametrize(
    ("size", "length_code"),
    [(0, 0), (125, 125), (126, 126), (65535, 126), (65536, 127), (200_003, 127)],
)
def test_a_frame_takes_the_shortest_length_form(
    pair: tuple[WebSocket, Peer], size: int, length_code: int
) -> None:
    stream, peer = pair
    payload = os.urandom(size)
    stream.send(payload)
    reading = Background(peer.read_frame)
    stream.close()
    frame = reading.result()
    assert (frame.length_code, frame.final, frame.opcode) == (length_code, True, BINARY)
    assert frame.payload == payload


def test_each_frame_has_a_fresh_mask(
    pair: tuple[WebSocket, Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, peer = pair
    keys = iter([b"\x01\x02\x03\x04", b"\xff\x00\xff\x00", b"\x00\x00\x00\x00"])
    monkeypatch.setattr(os, "urandom", lambda size: next(keys))
    payload = b"\xaa\xbb\xcc\xdd\xaa\x00\x00\x00\x00"
    stream.send(payload)
    stream.send(payload)
    stream.close()
    first, second = peer.read_frame(), peer.read_frame()
    assert first.wire == xor(payload, b"\x01\x02\x03\x04")
    assert second.wire == xor(payload, b"\xff\x00\xff\x00")
    assert first.payload == second.payload == payload


def test_input_goes_out_while_replies_are_read_from_one_thread(
    pair: tuple[WebSocket, Peer],
) -> None:
    """The server answers each message as it reads it and never reads ahead, so neither end's
    buffers can hold the whole exchange: the client must read while it sends."""
    stream, peer = pair
    count, size = 200, 60_000
    taken_ahead: list[int] = []

    def messages() -> Iterator[bytes]:
        for number in range(count):
            taken_ahead.append(len(stream._outgoing))
            yield bytes([number]) * size

    def echo() -> None:
        for _ in range(count):
            frame = peer.read_frame()
            peer.frame(BINARY, frame.payload[:1] * size)
        peer.frame(CLOSE, struct.pack("!H", 1000))

    echoing = Background(echo)
    stream.send_from(messages())
    replies = []
    while (message := stream.receive()) is not None:
        replies.append(message)
    echoing.result()
    assert replies == [bytes([number]) * size for number in range(count)]
    assert max(taken_ahead) < websocket.SEND_BYTES


# -- receiving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_001])
def test_each_length_form_is_read(pair: tuple[WebSocket, Peer], size: int) -> None:
    stream, peer = pair
    payload = os.urandom(size)
    writing = Background(lambda: peer.frame(BINARY, payload))
    assert stream.receive() == payload
    writing.result()


def test_the_unmasked_examples_of_rfc_6455_are_read(pair: tuple[WebSocket, Peer]) -> None:
    """Examples 5.7: "Hello", the same in two fragments, 256 bytes with a 16-bit length and
    65536 with a 64-bit one."""
    stream, peer = pair
    wire = (
        bytes.fromhex("810548656c6c6f")
        + bytes.fromhex("010348656c80026c6f")
        + bytes.fromhex("827e0100")
        + b"a" * 256
        + bytes.fromhex("827f0000000000010000")
        + b"b" * 65536
    )
    writing = Background(lambda: peer.send(wire))
    assert [stream.receive() for _ in range(4)] == [b"Hello", b"Hello", b"a" * 256, b"b" * 65536]
    writing.result()


def test_frames_arriving_a_byte_at_a_time_are_gathered(pair: tuple[WebSocket, Peer]) -> None:
    """Every length form split at every byte: headers arrive in pieces too."""
    stream, peer = pair
    payloads = [b"x" * 5, b"y" * 300, b"z" * 70_000]
    wire = b"".join(encode(BINARY, payload) for payload in payloads)

    def trickle() -> None:
        for index in range(0, 400):
            peer.send(wire[index : index + 1])
        peer.send(wire[400:])

    writing = Background(trickle)
    assert [stream.receive() for _ in payloads] == payloads
    writing.result()


def test_fragments_make_one_message_and_a_ping_between_them_is_answered(
    pair: tuple[WebSocket, Peer],
) -> None:
    stream, peer = pair
    peer.frame(BINARY, b"one ", final=False)
    peer.frame(PING, b"are you there")
    peer.frame(CONTINUATION, b"two ", final=False)
    peer.frame(PONG, b"nobody asked")
    peer.frame(CONTINUATION, b"three")
    peer.frame(TEXT, b"")
    assert stream.receive() == b"one two three"
    assert stream.receive() == b""
    stream.close()
    assert peer.read_frame()[1:3] == (PONG, b"are you there")
    assert peer.read_frame().opcode == CLOSE


@pytest.mark.parametrize("status", [struct.pack("!H", 1000) + b"bye", b""])
def test_a_close_ends_the_stream_and_is_echoed_once(
    pair: tuple[WebSocket, Peer], status: bytes
) -> None:
    """The status code comes back (not the reason); close() then sends no second close."""
    stream, peer = pair
    peer.frame(BINARY, b"last", final=False)
    peer.frame(CLOSE, status)
    assert stream.receive() is None
    stream.close()
    echo = peer.read_frame()
    assert (echo.opcode, echo.payload) == (CLOSE, status[:2])
    assert peer.at_end()


def test_closing_a_stream_whose_server_is_gone_does_not_fail(pair: tuple[WebSocket, Peer]) -> None:
    stream, peer = pair
    peer.sock.close()
    stream.send(b"x" * 1_000_000)
    stream.close()
    assert stream.sock.fileno() == -1


# -- what fails --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        (b"", "the server ended the stream without closing it"),
        (encode(BINARY, b"whole"), "the server ended the stream without closing it"),
        (b"\x82", "the stream ended in the middle of a frame"),
        (b"\x82\x7e\x01", "the stream ended in the middle of a frame"),
        (encode(BINARY, b"x" * 300)[:-1], "the stream ended in the middle of a frame"),
    ],
)
def test_a_server_that_hangs_up_breaks_the_stream(
    pair: tuple[WebSocket, Peer], sent: bytes, problem: str
) -> None:
    stream, peer = pair
    peer.send(sent)
    peer.sock.shutdown(socket.SHUT_WR)
    if sent.startswith(encode(BINARY, b"whole")):
        assert stream.receive() == b"whole"
    assert failure(stream) == problem


def test_a_silent_server_breaks_the_stream_after_the_idle_time() -> None:
    client, server = socket.socketpair()
    with client, server:
        assert failure(WebSocket(client, 0.2)) == "nothing moved on the stream for 0.2 s"


def test_a_reset_connection_breaks_the_stream() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()  # with no lingering: a reset
        assert failure(WebSocket(client, WAIT)).startswith("the stream broke: ")


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_an_unknown_opcode_is_refused(pair: tuple[WebSocket, Peer], opcode: int) -> None:
    stream, peer = pair
    peer.frame(opcode, b"?")
    assert failure(stream) == f"unknown WebSocket opcode {opcode}"


def test_a_masked_frame_from_the_server_is_refused(pair: tuple[WebSocket, Peer]) -> None:
    stream, peer = pair
    peer.frame(BINARY, b"hidden", mask=b"\x01\x02\x03\x04")
    assert "masked frame" in failure(stream)


def test_a_frame_too_long_is_refused_before_its_payload_arrives(
    pair: tuple[WebSocket, Peer],
) -> None:
    stream, peer = pair
    peer.send(bytes([0x82, 127]) + struct.pack("!Q", (1 << 63) - 1))
    assert failure(stream) == f"a frame of {(1 << 63) - 1} bytes is more than a stream carries"


def test_fragments_adding_up_past_the_bound_are_refused(
    pair: tuple[WebSocket, Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, peer = pair
    monkeypatch.setattr(websocket, "MAX_MESSAGE", 1000)
    peer.frame(BINARY, b"x" * 600, final=False)
    peer.frame(CONTINUATION, b"x" * 401)
    assert failure(stream) == "a message longer than a stream carries"


def test_a_frame_of_exactly_the_bound_is_taken(
    pair: tuple[WebSocket, Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, peer = pair
    monkeypatch.setattr(websocket, "MAX_MESSAGE", 1000)
    peer.frame(BINARY, b"x" * 1000)
    assert stream.receive() == b"x" * 1000


# -- over TLS, as the API server speaks it ------------------------------------------------------


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    authority = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("api").configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    authority.configure_trust(client)
    return server, client


def test_a_large_exchange_in_both_directions_over_tls() -> None:
    """Records that hold several frames, frames spread over several records, and writes that
    the socket cannot take at once all come through a TLS connection driven from one thread."""
    server_context, client_context = tls_contexts()
    client_end, server_end = socket.socketpair()
    server_end.settimeout(WAIT)
    client_end.settimeout(WAIT)
    accepting = Background(lambda: server_context.wrap_socket(server_end, server_side=True))
    client = client_context.wrap_socket(client_end, server_hostname="api")
    peer = Peer(accepting.result())
    sizes = [3, 70_000, 125, 1 << 20, 16_384, 0, 200_000]
    sent = [os.urandom(size) for size in sizes]

    def serve() -> list[bytes]:
        for payload in sent:
            peer.frame(BINARY, payload)
        got = [peer.read_frame().payload for _ in sizes]
        peer.frame(CLOSE, struct.pack("!H", 1000))
        return got

    serving = Background(serve)
    stream = WebSocket(client, WAIT)
    stream.send_from(iter(sent))
    received = []
    while (message := stream.receive()) is not None:
        received.append(message)
    stream.close()
    assert received == sent
    assert serving.result() == sent
