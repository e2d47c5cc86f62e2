"""HTTPS to the Kubernetes API server (HTTP/1.1 in http1.py): requests share one kept-alive
connection, streams have their own, TLS from a kubeconfig or a ServiceAccount (client keys only
ever in memory), bearer tokens re-read on every request, and error responses turned into
ApiError.

Why not a client library: `run` stays resident for as long as its chaincode runs, one process per
chaincode, and the few REST calls k8scc makes do not justify the ~15 MB that an HTTP client stack
adds to each of them (docs/performance.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from k8scc import kubeconfig
from k8scc.errors import K8sccError
from k8scc.http1 import ProtocolError, Response, Wire, send

if TYPE_CHECKING:
    from k8scc.execplugin import ExecCredential

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# A Retry-After longer than this is the server's guess, not a promise; retrying sooner is fine.
MAX_RETRY_AFTER_SECONDS = 10.0


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


# What a request can fail with before the API server answers: refused, reset, timed out, TLS.
TRANSPORT_ERRORS = (OSError, ProtocolError)


def status_code(error: Exception) -> int | None:
    return error.code if isinstance(error, ApiError) else None


def unavailable(error: Exception) -> bool:
    code = status_code(error)
    if code is not None:
        return code in (429, 500, 502, 503, 504)
    # A certificate that does not verify will not verify on the next attempt either.
    return isinstance(error, TRANSPORT_ERRORS) and not isinstance(
        error, ssl.SSLCertVerificationError
    )


def _retry_after(response: Response) -> float | None:
    """The seconds a 429 or 503 asks us to wait; the HTTP-date form is left to our backoff."""
    value = (response.getheader("Retry-After") or "").strip()
    if response.status in (429, 503) and value.isdigit():
        return float(value)
    return None


def _error(response: Response, body: bytes) -> ApiError:
    return ApiError(response.status, _message(body, response.status), _retry_after(response))


def pause(error: Exception, backoff: float) -> float:
    """How long to wait before retrying: the backoff, or longer if the server asked for it."""
    after = error.retry_after if isinstance(error, ApiError) else None
    return backoff if after is None else max(backoff, min(after, MAX_RETRY_AFTER_SECONDS))


def describe(error: Exception) -> str:
    """What Kubernetes said, in one line."""
    if isinstance(error, ApiError):
        return error.message
    return " ".join(f"{type(error).__name__}: {error}".split())


def _message(body: bytes, code: int) -> str:
    """The message of the Status object an error response carries."""
    try:
        status = json.loads(body)
    except ValueError:
        status = None
    return status_text(status, code)


def status_text(status: Any, code: int) -> str:
    text = (status.get("message") or status.get("reason")) if isinstance(status, dict) else None
    return " ".join(str(text).split()) if text else f"HTTP {code}"


class _Connection:
    """One TLS connection to the API server, opened when first used, whose certificate may be
    checked against a name other than the host (a kubeconfig's tls-server-name)."""

    def __init__(
        self, host: str, port: int, timeout: float, context: ssl.SSLContext, server_name: str
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.context = context
        self._server_name = server_name
        self.sock: socket.socket | None = None
        self.wire: Wire | None = None

    def connect(self, receive_bytes: int | None = None) -> Wire:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        try:
            # A small write (a WebSocket frame, the TLS handshake's last flight) must not wait
            # for the server's delayed ACK of the one before.
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = self.context.wrap_socket(raw, server_hostname=self._server_name)
        except BaseException:
            raw.close()
            raise
        self.wire = Wire(self.sock) if receive_bytes is None else Wire(self.sock, receive_bytes)
        return self.wire

    def exchange(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> Response:
        """Sends a request and reads the head of its answer."""
        wire = self.wire or self.connect()
        send(wire.sock, method, target, headers, body)
        return Response(wire)

    def close(self) -> None:
        sock, self.sock, self.wire = self.sock, None, None
        if sock is not None:
            sock.close()


def _tls_context(
    credentials: kubeconfig.Credentials, cert: str | None, key: str | None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if credentials.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif credentials.ca_pem:
        context.load_verify_locations(cadata=credentials.ca_pem)
    else:
        context.load_default_certs()
    if cert and key:
        # load_cert_chain reads only files: hand it memory-backed ones, so the key never
        # touches a disk.
        files = []
        try:
            for pem in (cert, key):
                fd = os.memfd_create("k8scc-client", os.MFD_CLOEXEC)
                files.append(fd)
                os.write(fd, pem.encode())
            context.load_cert_chain(f"/proc/self/fd/{files[0]}", f"/proc/self/fd/{files[1]}")
        finally:
            for fd in files:
                os.close(fd)
    return context


class Http:
    """HTTPS requests to one API server. One connection is kept alive between requests, so a
    launch pays for one TLS handshake, not one per request. A kept connection the server has
    closed meanwhile is noticed before it is used; one it closes while a request is on its way
    fails that request like any lost answer, and the caller's retry sends it again on a new
    connection: creates carry a create id, so no retry stores an object twice (kube.py)."""

    def __init__(self, credentials: kubeconfig.Credentials, timeout: float) -> None:
        url = urlsplit(credentials.server)
        self.host = url.hostname or ""
        self.port = url.port or 443
        self.authority = url.netloc
        self.prefix = url.path.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout
        self._lock = threading.Lock()
        self._exec: ExecCredential | None = None
        self._renew = 0.0
        self._idle: _Connection | None = None
        self._ahead: threading.Thread | None = None
        self._context = _tls_context(
            credentials, credentials.client_cert_pem, credentials.client_key_pem
        )

    def _token(self) -> str | None:
        """The bearer token for the next request. A token file is read every time, since
        ServiceAccount tokens are rotated in place; an exec plugin runs again near expiry."""
        credentials = self.credentials
        if credentials.exec_plugin is not None:
            # Imported here: few peers use a plugin, and only they need subprocess.
            from k8scc import execplugin  # noqa: PLC0415

            with self._lock:
                if self._exec is None or time.time() >= self._renew:
                    self._exec = execplugin.run(credentials.exec_plugin)
                    self._renew = execplugin.renew_at(self._exec)
                    if self._exec.client_cert_pem:
                        self._context = _tls_context(
                            credentials, self._exec.client_cert_pem, self._exec.client_key_pem
                        )
                        # It authenticated with the certificate being replaced.
                        self._drop_idle()
                return self._exec.token
        if credentials.token_file is not None:
            try:
                return credentials.token_file.read_text().strip()
            except OSError as error:
                raise K8sccError(
                    f"cannot read token {credentials.token_file}: {error.strerror}"
                ) from None
        return credentials.token

    def _headers(self) -> dict[str, str]:
        headers = {"Host": self.authority, "Accept": "application/json", "User-Agent": "k8scc"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _connection(self) -> _Connection:
        return _Connection(
            self.host,
            self.port,
            self.timeout,
            self._context,
            self.credentials.tls_server_name or self.host,
        )

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.close()

    def open_ahead(self) -> None:
        """Opens the next request's connection in a thread, so that its TCP and TLS handshakes
        overlap with whatever the caller does before that request."""
        thread = threading.Thread(target=self._open, args=(self._connection(),), daemon=True)
        with self._lock:
            self._ahead = thread
        thread.start()

    def _open(self, connection: _Connection) -> None:
        try:
            connection.connect()
        except TRANSPORT_ERRORS:
            # The request opens a connection of its own, and reports what fails then.
            connection.close()
            return
        self._keep(connection)

    def _take(self) -> _Connection:
        """The kept connection if it is still open, else a new one."""
        with self._lock:
            ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.join(self.timeout)
        with self._lock:
            connection, self._idle = self._idle, None
        if connection is not None and _still_open(connection):
            if connection.sock is not None:
                connection.sock.settimeout(self.timeout)
            return connection
        if connection is not None:
            connection.close()
        return self._connection()

    def _keep(self, connection: _Connection) -> None:
        with self._lock:
            # Not one that authenticated with an exec plugin's certificate since replaced.
            if self._idle is None and connection.context is self._context:
                self._idle = connection
                return
        connection.close()

    def _exchange(
        self,
        connection: _Connection,
        headers: dict[str, str],
        method: str,
        path: str,
        query: dict[str, Any] | None,
        body: Any,
        content_type: str,
    ) -> Response:
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        target = self.prefix + path + (f"?{urlencode(query)}" if query else "")
        return connection.exchange(method, target, headers, payload)

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        # First: renewing an exec plugin's certificate drops the kept connection.
        headers = self._headers()
        connection = self._take()
        try:
            response = self._exchange(connection, headers, method, path, query, body, content_type)
            data = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close or not response.complete:
            connection.close()
        else:
            self._keep(connection)
        if response.status >= 400:
            raise _error(response, data)
        result = json.loads(data) if data else {}
        return result if isinstance(result, dict) else {}

    @contextmanager
    def stream(
        self, path: str, query: dict[str, Any], read_timeout: float | None
    ) -> Iterator[Response]:
        """A GET whose body arrives over time (watch, log), read with `read_timeout`."""
        headers = self._headers()
        connection = self._connection()
        try:
            response = self._exchange(connection, headers, "GET", path, query, None, "")
            if response.status >= 400:
                raise _error(response, response.read())
            if connection.sock is not None:
                connection.sock.settimeout(read_timeout)
            yield response
        finally:
            connection.close()

    def upgrade(
        self, path: str, query: list[tuple[str, str]], protocols: tuple[str, ...]
    ) -> tuple[socket.socket, str]:
        """A WebSocket (RFC 6455) opened on `path`: the socket, right past the server's 101
        answer, and the subprotocol the server chose among `protocols`. The answer is read
        a byte at a time, so no frame that follows it is buffered away from the caller."""
        key = base64.b64encode(os.urandom(16)).decode()
        # No Accept: the API server serves a stream, and refuses an Accept it cannot meet.
        headers = {
            **{k: v for k, v in self._headers().items() if k != "Accept"},
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Protocol": ", ".join(protocols),
        }
        connection = self._connection()
        # A byte at a time: no frame that follows the answer is buffered away from the caller.
        wire = connection.connect(receive_bytes=1)
        sock = wire.sock
        try:
            send(sock, "GET", f"{self.prefix}{path}?{urlencode(query)}", headers, None)
            answer = Response(wire)
            code = answer.status
            if code != 101:
                body = answer.read(MAX_ERROR_BYTES)
                message = _message(body, code)
                if message == f"HTTP {code}" and body.strip():
                    # Not a Status object: the server's own words, in one line.
                    message += ": " + " ".join(body.decode(errors="replace").split())[:300]
                raise ApiError(code, message)
            accept = base64.b64encode(
                hashlib.sha1((key + WEBSOCKET_GUID).encode(), usedforsecurity=False).digest()
            )
            if answer.getheader("sec-websocket-accept") != accept.decode():
                raise ProtocolError("the server did not accept the WebSocket")
            chosen = answer.getheader("sec-websocket-protocol") or ""
            if chosen not in protocols:
                raise ProtocolError(f"the server chose subprotocol {chosen!r}")
            return sock, chosen
        except BaseException:
            sock.close()
            raise


def _still_open(connection: _Connection) -> bool:
    """A kept connection is fit for the next request while nothing is waiting to be read on
    it: between answers, the only thing a server sends is the end of the connection."""
    sock = connection.sock
    if sock is None:
        return False
    if connection.wire is not None and connection.wire.buffered():
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    if not readable:
        return True
    # A TLS 1.3 server sends its session tickets after the handshake: a connection opened
    # ahead is readable with no answer waiting. Reading without blocking takes them in.
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        sock.recv(1)  # anything, even the end, makes it unfit
    except ssl.SSLWantReadError:
        return True
    except (OSError, ValueError):
        pass
    finally:
        sock.settimeout(timeout)
    return False


# An error answer's body longer than this is not a Status object.
MAX_ERROR_BYTES = 64 * 1024
