"""The node agent's kubelet log endpoint.

kube-apiserver answers `GET pods/NAME/log` by proxying to
`https://<node address>:<port>/containerLogs/<namespace>/<pod>/<container>` (testbed.md §7.1).
The container runtime feeds each container's output into a `LogStore`; `LogServer` serves it
there with the kubelet's semantics (§7.7), so `kubectl logs [-f]` and k8scc's log reading behave
as on a real node.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

_log = logging.getLogger(__name__)

ContainerState = Literal["waiting", "running", "exited"]

_STREAMS = ("stdout", "stderr")
_DEFAULT_WAITING_REASON = "ContainerCreating"
# The kubelet words the two image-pull reasons differently from the others.
_WAITING_WORDS = {
    "ErrImagePull": "image can't be pulled",
    "ImagePullBackOff": "trying and failing to pull image",
}
# How long an idle follower waits for a line before checking that its client is still there.
_FOLLOW_POLL_SECONDS = 0.2
# Bounds a stalled client: the TLS handshake, reading the request, and each write of the answer.
_IO_TIMEOUT_SECONDS = 30.0
_STOP_GRACE_SECONDS = 1.0
_SERVE_POLL_SECONDS = 0.05

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NANOS_PER_SECOND = 1_000_000_000
_INTEGER = re.compile(r"[+-]?[0-9]+")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)


def _format_rfc3339nano(unix_ns: int) -> str:
    seconds, fraction = divmod(unix_ns, _NANOS_PER_SECOND)
    text = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        # Go's RFC3339Nano, which the kubelet prints, drops trailing zeros (and the dot with them).
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def _parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch; accepts what Go's time.Parse(time.RFC3339, ...) does."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(text)
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    offset = timedelta()
    if match[8] is not None:
        offset = timedelta(hours=int(match[9]), minutes=int(match[10]))
        if match[8] == "-":
            offset = -offset
    moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    fraction = (match[7] or "0")[:9].ljust(9, "0")
    return (moment - _EPOCH) // timedelta(seconds=1) * _NANOS_PER_SECOND + int(fraction)


@dataclass(frozen=True)
class LogEntry:
    """One CRI log record. Lines always arrive whole, so every record is a full ("F") one."""

    unix_ns: int
    stream: str
    line: bytes

    @property
    def timestamp(self) -> str:
        """RFC3339Nano in UTC, as the CRI log format and the kubelet write it."""
        return _format_rfc3339nano(self.unix_ns)


class ContainerLog:
    """Lines of one container, kept until the pod object is deleted; thread-safe."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._entries: list[LogEntry] = []
        self._state: ContainerState = "waiting"
        self._waiting_reason = _DEFAULT_WAITING_REASON

    def append(self, stream: str, line: bytes) -> None:
        """Record a line the container wrote to `stream` ("stdout" or "stderr").

        A trailing newline is dropped, so lines read with `readline()` can be passed as they are;
        bytes holding several lines become one record each, as in a CRI log file.
        """
        if stream not in _STREAMS:
            raise ValueError(f"stream must be stdout or stderr, not {stream!r}")
        lines = line.removesuffix(b"\n").split(b"\n")
        with self._changed:
            # Stamped under the lock so timestamps never go backwards along the log.
            now = time.time_ns()
            self._entries.extend(LogEntry(now, stream, text) for text in lines)
            self._changed.notify_all()

    def mark_started(self) -> None:
        with self._changed:
            self._state = "running"

    def mark_exited(self) -> None:
        """Call once the container's output is drained: followers end after the last line."""
        with self._changed:
            self._state = "exited"
            self._changed.notify_all()

    def set_waiting_reason(self, reason: str) -> None:
        """Why the container has not started yet; shown to whoever asks for its log meanwhile."""
        with self._changed:
            self._waiting_reason = reason

    def status(self) -> tuple[ContainerState, str]:
        """The state and the reason it is (or was last) waiting for."""
        with self._changed:
            return self._state, self._waiting_reason

    def entries_from(self, index: int, wait: float = 0.0) -> tuple[list[LogEntry], bool]:
        """Entries from position `index` on, waiting up to `wait` seconds for one to arrive; and
        whether the container has exited, i.e. whether these are the last ones."""
        with self._changed:
            if wait > 0 and len(self._entries) <= index and self._state != "exited":
                self._changed.wait(wait)
            return self._entries[index:], self._state == "exited"


class LogStore:
    """Container logs by namespace, pod and container; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], dict[str, ContainerLog]] = {}

    def container(self, namespace: str, pod: str, container: str) -> ContainerLog:
        """The container's log, created in state "waiting" on first use."""
        with self._lock:
            containers = self._pods.setdefault((namespace, pod), {})
            log = containers.get(container)
            if log is None:
                log = containers[container] = ContainerLog()
            return log

    def forget_pod(self, namespace: str, pod: str) -> None:
        with self._lock:
            containers = self._pods.pop((namespace, pod), {})
        # Followers of a deleted pod would otherwise wait for lines that never come.
        for log in containers.values():
            log.mark_exited()

    def set_waiting_reason(self, namespace: str, pod: str, container: str, reason: str) -> None:
        """E.g. ContainerCreating, PodInitializing, ErrImagePull."""
        self.container(namespace, pod, container).set_waiting_reason(reason)

    def lookup(self, namespace: str, pod: str, container: str) -> ContainerLog | None:
        with self._lock:
            return self._pods.get((namespace, pod), {}).get(container)

    def has_pod(self, namespace: str, pod: str) -> bool:
        with self._lock:
            return (namespace, pod) in self._pods


@dataclass(frozen=True)
class _LogOptions:
    follow: bool
    previous: bool
    timestamps: bool
    tail_lines: int | None
    limit_bytes: int | None
    since_ns: int | None


class _BadQueryError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _parse_options(query: str, now_ns: int) -> _LogOptions:
    """Decode and validate the query as the kubelet does: 400 if it cannot be decoded, 422 if
    the values are invalid."""
    values = {name: given[0] for name, given in parse_qs(query, keep_blank_values=True).items()}

    def flag(name: str) -> bool:
        # Kubernetes' query decoding: anything but absent, "0" or "false" (even "") means true.
        value = values.get(name)
        return value is not None and value != "0" and value.lower() != "false"

    def integer(name: str) -> int | None:
        value = values.get(name)
        if value is None:
            return None
        if not _INTEGER.fullmatch(value):
            raise _BadQueryError(400, f"cannot decode query: {name}={value!r} is not an integer")
        return int(value)

    tail_lines, limit_bytes, since_seconds = (
        integer(name) for name in ("tailLines", "limitBytes", "sinceSeconds")
    )
    since_time = None
    if values.get("sinceTime", "") not in ("", "null"):
        try:
            since_time = _parse_rfc3339(values["sinceTime"])
        except ValueError:
            raise _BadQueryError(
                400, f"cannot decode query: sinceTime={values['sinceTime']!r} is not RFC 3339"
            ) from None

    if tail_lines is not None and tail_lines < 0:
        raise _BadQueryError(422, "tailLines must be greater than or equal to 0")
    if limit_bytes is not None and limit_bytes < 1:
        raise _BadQueryError(422, "limitBytes must be greater than 0")
    if since_seconds is not None and since_seconds < 1:
        raise _BadQueryError(422, "sinceSeconds must be greater than 0")
    if since_seconds is not None and since_time is not None:
        raise _BadQueryError(422, "at most one of sinceTime or sinceSeconds may be specified")

    since_ns = since_time
    if since_seconds is not None:
        since_ns = now_ns - since_seconds * _NANOS_PER_SECOND
    return _LogOptions(
        follow=flag("follow"),
        previous=flag("previous"),
        timestamps=flag("timestamps"),
        tail_lines=tail_lines,
        limit_bytes=limit_bytes,
        since_ns=since_ns,
    )


def _waiting_message(container: str, pod: str, reason: str) -> str:
    words = _WAITING_WORDS.get(reason, reason)
    return f'container "{container}" in pod "{pod}" is waiting to start: {words}'


def _shut_down(connection: socket.socket) -> None:
    # socket.socket's own shutdown, not SSLSocket's: that one drops the TLS state under the
    # request thread still using it. Shutting down the TCP socket wakes that thread instead.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(connection, socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], store: LogStore, tls: ssl.SSLContext) -> None:
        super().__init__(address, _Handler)
        # Handshakes are left to the request threads, so a stalled client cannot block accept().
        self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.store = store
        self._connections_changed = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._closing = False

    def track(self, connection: socket.socket) -> None:
        with self._connections_changed:
            if self._closing:
                _shut_down(connection)
            else:
                self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_changed:
            self._connections.discard(connection)
            self._connections_changed.notify_all()

    def close_connections(self, grace: float) -> None:
        """Cut every open connection and wait up to `grace` seconds for their threads to end."""
        with self._connections_changed:
            self._closing = True
            for connection in self._connections:
                _shut_down(connection)
            self._connections_changed.wait_for(lambda: not self._connections, timeout=grace)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients going away mid-answer are routine here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _IO_TIMEOUT_SECONDS
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def handle(self) -> None:
        try:
            self.connection.do_handshake()
        except OSError as error:
            _log.debug("TLS handshake with %s failed: %s", self.client_address, error)
            return
        super().handle()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.split("/")
        if len(parts) != 5 or parts[:2] != ["", "containerLogs"] or not all(parts[2:]):
            self._send_text(404, "404 page not found")
            return
        namespace, pod, container = (unquote(part) for part in parts[2:])
        try:
            options = _parse_options(url.query, time.time_ns())
        except _BadQueryError as bad:
            self._send_text(bad.status, bad.message)
            return

        store = self.server.store
        log = store.lookup(namespace, pod, container)
        if log is None:
            if store.has_pod(namespace, pod):
                self._send_text(404, f'container "{container}" not found in pod "{pod}"')
            else:
                self._send_text(404, f'pod "{pod}" does not exist')
            return
        # Containers are never restarted with their old log kept apart, so none has a previous one.
        if options.previous:
            self._send_text(
                400, f'previous terminated container "{container}" in pod "{pod}" not found'
            )
            return
        state, reason = log.status()
        if state == "waiting":
            self._send_text(400, _waiting_message(container, pod, reason))
            return
        self._send_log(log, options)

    def _send_text(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_log(self, log: ContainerLog, options: _LogOptions) -> None:
        entries, exited = log.entries_from(0)
        position = len(entries)
        if options.tail_lines is not None:
            entries = entries[len(entries) - min(options.tail_lines, len(entries)) :]
        remaining = options.limit_bytes

        # Chunked even when not following, as the kubelet answers.
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            data = b"".join(self._render(entry, options) for entry in entries)
            if remaining is not None:
                data = data[:remaining]
                remaining -= len(data)
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if exited or not options.follow or remaining == 0:
                break
            while True:
                if self._client_gone():
                    # No final chunk: the client must not take a cut stream for the whole log.
                    self.close_connection = True
                    return
                entries, exited = log.entries_from(position, wait=_FOLLOW_POLL_SECONDS)
                if entries or exited:
                    break
            position += len(entries)
        self.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _render(entry: LogEntry, options: _LogOptions) -> bytes:
        if options.since_ns is not None and entry.unix_ns < options.since_ns:
            return b""
        if options.timestamps:
            return b"%s %s\n" % (entry.timestamp.encode(), entry.line)
        return entry.line + b"\n"

    def _client_gone(self) -> bool:
        # After its request a client sends nothing, so a readable socket means it has closed the
        # connection, or stop() has shut it down.
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable)


class LogServer:
    """HTTPS server for `GET /containerLogs/...`. It asks for no client certificate: the API
    server presents none in the test bed."""

    def __init__(
        self,
        store: LogStore,
        cert_file: Path,
        key_file: Path,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Binds at once, so `port` is known before `start()`; port 0 picks a free one."""
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert_file, key_file)
        self._server = _Server((host, port), store, tls)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.socket.getsockname()[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _SERVE_POLL_SECONDS},
            name=f"logserver:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and cut open connections, follow streams included."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self._server.close_connections(_STOP_GRACE_SECONDS)
