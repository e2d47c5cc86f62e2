"""The exec channel protocol over a socket pair whose other end plays the API server: stdin
goes out on channel 0 (closed with the v5 close message, never under v4), stdout and stderr
come back on 1 and 2, and the Status on channel 3 says how the command ended."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from k8scc import podexec
from k8scc.podexec import Exited, converse, exit_of
from k8scc.websocket import BINARY, CLOSE, WebSocket, WebSocketError
from tests.unit.wspeer import Background, Peer, connected

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

SUCCESS = {"metadata": {}, "status": "Success"}
EXIT_3_MESSAGE = "command terminated with non-zero exit code: error executing [sh], exit code 3"
EXIT_3 = {
    "metadata": {},
    "status": "Failure",
    "message": EXIT_3_MESSAGE,
    "reason": "NonZeroExitCode",
    "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
}


@pytest.fixture
def pair() -> Iterator[tuple[WebSocket, Peer]]:
    with connected() as ends:
        yield ends


def channel(number: int, data: bytes | dict[str, Any]) -> bytes:
    return bytes([number]) + (json.dumps(data).encode() if isinstance(data, dict) else data)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (SUCCESS, (0, "")),
        (EXIT_3, (3, EXIT_3_MESSAGE)),
        ({"status": "Failure", "message": "container not found"}, (-1, "container not found")),
        ({**EXIT_3, "details": {"causes": [{"reason": "ExitCode", "message": "x"}]}}, None),
        ([], (-1, "the status channel carried no Status")),
    ],
)
def test_the_status_says_the_exit_code(status: object, expected: tuple[int, str] | None) -> None:
    code, message = exit_of(status)
    if expected is None:
        assert code == -1 and "exit code 3" in message
    else:
        assert (code, message) == expected


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io"])
def test_stdin_goes_out_whole_and_the_output_comes_back(
    pair: tuple[WebSocket, Peer], protocol: str
) -> None:
    stream, peer = pair
    data = bytes(range(256)) * 2000  # several chunks

    def server() -> tuple[bytes, list[bytes]]:
        received, controls = b"", []
        while len(received) < len(data):
            payload = peer.read_frame().payload
            assert payload[0] == podexec.STDIN
            received += payload[1:]
        peer.frame(BINARY, channel(podexec.STDOUT, b"out-1 "))
        peer.frame(BINARY, channel(podexec.STDERR, b"complaint\n"))
        peer.frame(BINARY, channel(podexec.STDOUT, b"out-2"))
        if protocol.startswith("v5."):
            controls.append(peer.read_frame().payload)
        peer.frame(BINARY, channel(podexec.STATUS, EXIT_3))
        return received, controls

    serving = Background(server)
    printed = bytearray()
    exited = converse(stream, protocol, io.BytesIO(data), printed.extend)
    received, controls = serving.result()
    assert received == data
    assert controls == ([bytes([podexec.CLOSE_STREAM, podexec.STDIN])] if "v5" in protocol else [])
    assert bytes(printed) == b"out-1 out-2"
    assert exited == Exited(3, EXIT_3_MESSAGE, "complaint\n")


def test_stderr_is_kept_up_to_its_bound(pair: tuple[WebSocket, Peer]) -> None:
    stream, peer = pair
    for _ in range(5):
        peer.frame(BINARY, channel(podexec.STDERR, b"e" * 5000))
    peer.frame(BINARY, channel(podexec.STATUS, SUCCESS))
    exited = converse(stream, "v5.channel.k8s.io", None, lambda _: None)
    assert exited == Exited(0, "", "e" * podexec.MAX_STDERR)


@pytest.mark.parametrize(
    ("frames", "problem"),
    [
        ([channel(podexec.STDOUT, b"half")], "the stream ended before the command's exit status"),
        ([channel(podexec.STATUS, b"not json")], None),
    ],
)
def test_a_stream_without_a_status_fails(
    pair: tuple[WebSocket, Peer], frames: list[bytes], problem: str | None
) -> None:
    stream, peer = pair
    for frame in frames:
        peer.frame(BINARY, frame)
    peer.frame(CLOSE, struct.pack("!H", 1000))
    if problem is None:
        exited = converse(stream, "v5.channel.k8s.io", None, lambda _: None)
        assert exited == Exited(-1, "the status channel carried no Status", "")
        return
    with pytest.raises(WebSocketError, match=problem):
        converse(stream, "v5.channel.k8s.io", None, lambda _: None)
