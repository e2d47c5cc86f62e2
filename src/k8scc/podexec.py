"""A command run in a pod's container through the API server's exec stream, the way kubectl
exec runs it: channel protocol v5.channel.k8s.io (v4 from servers older than 1.30, where stdin
cannot be closed, so k8scc's commands never wait for its end). Stdin comes from a file, stdout
goes to a sink, stderr is kept up to a bound, and the command's exit status arrives on the
status channel."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import BinaryIO

from k8scc.record import record
from k8scc.transport import status_text
from k8scc.websocket import WebSocket, WebSocketError

STDIN, STDOUT, STDERR, STATUS, CLOSE_STREAM = 0, 1, 2, 3, 255
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
CHUNK = 64 * 1024
MAX_STDERR = 16 * 1024


@record
class Exited:
    """How the command ended: `code` 0 for success, else its exit code, or -1 when it did not
    run at all (`message` says why, in the API server's words); what it wrote on stderr."""

    code: int
    message: str
    stderr: str


def exit_of(status: object) -> tuple[int, str]:
    """The exit code and message a status-channel Status carries."""
    if not isinstance(status, dict):
        return -1, "the status channel carried no Status"
    if status.get("status") == "Success":
        return 0, ""
    message = status_text(status, 500)
    details = status.get("details")
    for cause in (details.get("causes") or []) if isinstance(details, dict) else []:
        text = str(cause.get("message", "")) if isinstance(cause, dict) else ""
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode" and text.isdigit():
            return int(text), message
    return -1, message


def _stdin_messages(stdin: BinaryIO, can_close: bool) -> Iterator[bytes]:
    while chunk := stdin.read(CHUNK):
        yield bytes([STDIN]) + chunk
    if can_close:
        yield bytes([CLOSE_STREAM, STDIN])


def converse(
    stream: WebSocket,
    protocol: str,
    stdin: BinaryIO | None,
    on_stdout: Callable[[bytes], None],
) -> Exited:
    """Feeds `stdin` while it reads the stream (so a command that prints while it reads never
    waits on us), until the status arrives."""
    if stdin is not None:
        stream.send_from(_stdin_messages(stdin, can_close=protocol.startswith("v5.")))
    stderr = bytearray()
    while (message := stream.receive()) is not None:
        if not message:
            continue
        channel, data = message[0], message[1:]
        if channel == STDOUT:
            on_stdout(data)
        elif channel == STDERR:
            stderr += data[: MAX_STDERR - len(stderr)]
        elif channel == STATUS:
            try:
                code, text = exit_of(json.loads(data))
            except ValueError:
                code, text = -1, "the status channel carried no Status"
            return Exited(code, text, stderr.decode(errors="replace"))
    raise WebSocketError("the stream ended before the command's exit status")
