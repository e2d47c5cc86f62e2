"""A stand-in API server for the unit tests of kube.py and podlog.py: over TLS on 127.0.0.1 it
answers each request with the next step of a script for that method and path (an exact reply, a
watch or log stream, or a hang-up without an answer) and records what it was asked and when.
Steps of one path are taken in order; requests to different paths (a watch and a log read on
two threads) may interleave. A request the script does not expect gets 418, which k8scc never
retries, so a test fails at once instead of waiting out a retry window. Like an API server it
speaks HTTP/1.1 and keeps a connection open after a whole answer, so each request records the
connection it came on."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trustme
import yaml

from k8scc import config
from k8scc import record as records
from k8scc.kube import Kube

NAMESPACE = "ns"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request had been read
    connection: int  # the client's port: one per connection

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """A whole response. `body` may be computed from the requests so far, the way a server
    answers with what was posted earlier."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Then close the connection without saying so: a server ending an idle one.
    hang_up_after: bool = False


@dataclass(frozen=True)
class Events:
    """A watch response: one JSON line per event, then the server ends the stream. With a
    `gate`, the events in `after` follow once the test sets it."""

    events: list[dict[str, Any]]
    gate: threading.Event | None = None
    after: list[dict[str, Any]] = field(default_factory=list)
    hold: bool = False  # then keep the stream open, silent, until the server stops


@dataclass(frozen=True)
class Stream:
    """A streamed body of raw bytes (a pod's log), ended by closing the connection."""

    chunks: list[bytes]
    hold: bool = False  # keep the connection open, silent, until the server stops


@dataclass(frozen=True)
class Hangup:
    """Reads the request whole, then closes the connection without answering: a response lost
    after the server acted on the request."""


@dataclass(frozen=True)
class Stall:
    """Reads the request whole and never answers, until the server stops: a hung server."""


Response = Reply | Events | Stream | Hangup | Stall
GATE_SECONDS = 60.0


@dataclass(frozen=True)
class Step:
    method: str
    path: str  # without the query
    response: Response


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes Status object."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def pods_path(name: str = "") -> str:
    return f"/api/v1/namespaces/{NAMESPACE}/pods" + (f"/{name}" if name else "")


class ScriptedApi:
    def __init__(self, script: list[Step]) -> None:
        self.script = list(script)
        self.requests: list[Request] = []
        self.unexpected: list[str] = []
        self._lock = threading.Lock()
        self.closing = threading.Event()
        # Set once the server has closed a connection after a `hang_up_after` answer.
        self.hung_up = threading.Event()
        # Connections accepted (TLS handshake done), whether or not a request came on them.
        self.accepted = 0
        self.ca = trustme.CA()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def connections(self) -> list[int]:
        """The connections the requests came on, in the order first used."""
        return list(dict.fromkeys(request.connection for request in self.requests))

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def next_response(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
            for index, step in enumerate(self.script):
                if (step.method, step.path) == (request.method, request.path):
                    return self.script.pop(index).response
            expected = ", ".join(f"{s.method} {s.path}" for s in self.script) or "none"
            self.unexpected.append(f"{request.method} {request.path} (expected {expected})")
        return Reply(418, status(418, "Unexpected", f"unexpected {request.method} {request.path}"))

    def kube(self, directory: Path) -> Kube:
        """A client of this server, through a kubeconfig as an operator would write one."""
        document = {
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": f"https://127.0.0.1:{self.port}",
                        "certificate-authority-data": base64.b64encode(
                            self.ca.cert_pem.bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "u", "user": {"token": "scripted"}}],
            "contexts": [
                {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": NAMESPACE}}
            ],
            "current-context": "x",
        }
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump(document))
        return Kube.connect(records.replace(config.parse(""), kubeconfig=path))

    def finished(self) -> None:
        """Asserts that every request was expected and every step was asked for."""
        assert self.unexpected == []
        assert self.script == [], "steps never requested"

    def start(self) -> None:
        self._thread.start()

    def stop_unstarted(self) -> None:
        """Closes the port of a server never started."""
        self._server.server_close()

    def stop(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@contextmanager
def scripted_api(script: list[Step]) -> Iterator[ScriptedApi]:
    api = ScriptedApi(script)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def _handler(api: ScriptedApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle, the body waits out the client's
        # delayed ACK (40 ms a request).
        disable_nagle_algorithm = True

        def setup(self) -> None:
            with api._lock:
                api.accepted += 1
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the requests are recorded; stderr noise would only bury test output

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            request = Request(
                method=self.command,
                path=url.path,
                query=dict(parse_qsl(url.query)),
                headers=dict(self.headers.items()),
                body=body,
                at=time.monotonic(),
                connection=self.client_address[1],
            )
            response = api.next_response(request)
            if isinstance(response, Hangup):
                self.close_connection = True
                return
            if isinstance(response, Stall):
                api.closing.wait(GATE_SECONDS)
                self.close_connection = True
                return
            if isinstance(response, Events):
                self._stream(
                    "application/json",
                    _lines(response.events),
                    response.gate,
                    _lines(response.after),
                    response.hold,
                )
                return
            if isinstance(response, Stream):
                self._stream("text/plain", response.chunks, hold=response.hold)
                return
            content = response.body
            if callable(content):
                content = content(list(api.requests))
            payload = b"" if content is None else json.dumps(content).encode()
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            if response.hang_up_after:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                api.hung_up.set()

        def _stream(
            self,
            content_type: str,
            chunks: list[bytes],
            gate: threading.Event | None = None,
            after: list[bytes] | None = None,
            hold: bool = False,
        ) -> None:
            """A body sent as it comes, ended by closing the connection."""
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(chunk)
            self.wfile.flush()
            if gate is not None:
                gate.wait(GATE_SECONDS)
                for chunk in after or []:
                    self.wfile.write(chunk)
                self.wfile.flush()
            if hold:
                api.closing.wait(GATE_SECONDS)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_PATCH(self) -> None:
            self._answer()

        def do_DELETE(self) -> None:
            self._answer()

    return Handler


def _lines(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(event).encode() + b"\n" for event in events]
