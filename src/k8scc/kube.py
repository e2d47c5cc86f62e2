"""All of k8scc's Kubernetes I/O, over the standard library's HTTPS client: creating and
deleting its objects, watching one pod and following its log. Transient failures (connection
refused while the API server restarts, 5xx, 429) are retried with bounded backoff, or after the
Retry-After of a 429 or 503; everything else becomes one K8sccError line naming the object and
what Kubernetes said.

Why not a client library: `run` stays resident for as long as its chaincode runs, one process per
chaincode, and the few REST calls k8scc makes do not justify the ~15 MB that an HTTP client stack
adds to each of them (docs/performance.md).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from k8scc import kubeconfig, names
from k8scc.config import Config
from k8scc.errors import K8sccError
from k8scc.render import Owner

T = TypeVar("T")
RETRY_SECONDS = 30.0
AUTHZ_WARMUP_SECONDS = 15.0
WATCH_SECONDS = 60
REQUEST_SECONDS = 15.0
# A watch is silent for up to WATCH_SECONDS before the server ends it; only longer is a dead link.
WATCH_READ_SECONDS = WATCH_SECONDS + 30
# A Retry-After longer than this is the server's guess, not a promise; retrying sooner is fine.
MAX_RETRY_AFTER_SECONDS = 10.0
FIELD_MANAGER = "k8scc"


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


# What a request can fail with before the API server answers: refused, reset, timed out, TLS.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


def _status_code(error: Exception) -> int | None:
    return error.code if isinstance(error, ApiError) else None


def _unavailable(error: Exception) -> bool:
    code = _status_code(error)
    if code is not None:
        return code in (429, 500, 502, 503, 504)
    # A certificate that does not verify will not verify on the next attempt either.
    return isinstance(error, TRANSPORT_ERRORS) and not isinstance(
        error, ssl.SSLCertVerificationError
    )


def _retry_after(response: http.client.HTTPResponse) -> float | None:
    """The seconds a 429 or 503 asks us to wait; the HTTP-date form is left to our backoff."""
    value = (response.getheader("Retry-After") or "").strip()
    if response.status in (429, 503) and value.isdigit():
        return float(value)
    return None


def _error(response: http.client.HTTPResponse, body: bytes) -> ApiError:
    return ApiError(response.status, _message(body, response.status), _retry_after(response))


def _pause(error: Exception, backoff: float) -> float:
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
    return _status_text(status, code)


def _status_text(status: Any, code: int) -> str:
    text = (status.get("message") or status.get("reason")) if isinstance(status, dict) else None
    return " ".join(str(text).split()) if text else f"HTTP {code}"


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection that can check the certificate against a name other than the host
    (a kubeconfig's tls-server-name)."""

    def __init__(
        self, host: str, port: int, timeout: float, context: ssl.SSLContext, server_name: str
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls = context
        self._server_name = server_name

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(raw, server_hostname=self._server_name)
        except BaseException:
            raw.close()
            raise


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


class _Http:
    """HTTPS requests to one API server, each on a connection of its own: a step makes only a
    handful, and a fresh connection never meets a keep-alive one the server has dropped, whose
    retry could repeat a create."""

    def __init__(self, credentials: kubeconfig.Credentials, timeout: float) -> None:
        url = urlsplit(credentials.server)
        self.host = url.hostname or ""
        self.port = url.port or 443
        self.prefix = url.path.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout
        self._lock = threading.Lock()
        self._exec: kubeconfig.ExecCredential | None = None
        self._renew = 0.0
        self._context = _tls_context(
            credentials, credentials.client_cert_pem, credentials.client_key_pem
        )

    def _token(self) -> str | None:
        """The bearer token for the next request. A token file is read every time, since
        ServiceAccount tokens are rotated in place; an exec plugin runs again near expiry."""
        credentials = self.credentials
        if credentials.exec_plugin is not None:
            with self._lock:
                if self._exec is None or time.time() >= self._renew:
                    self._exec = kubeconfig.run_exec_plugin(credentials.exec_plugin)
                    self._renew = kubeconfig.renew_at(self._exec)
                    if self._exec.client_cert_pem:
                        self._context = _tls_context(
                            credentials, self._exec.client_cert_pem, self._exec.client_key_pem
                        )
                return self._exec.token
        if credentials.token_file is not None:
            try:
                return credentials.token_file.read_text().strip()
            except OSError as error:
                raise K8sccError(
                    f"cannot read token {credentials.token_file}: {error.strerror}"
                ) from None
        return credentials.token

    def _send(
        self, method: str, path: str, query: dict[str, Any] | None, body: Any, content_type: str
    ) -> _Connection:
        headers = {"Accept": "application/json", "User-Agent": "k8scc"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        target = self.prefix + path + (f"?{urlencode(query)}" if query else "")
        connection = _Connection(
            self.host,
            self.port,
            self.timeout,
            self._context,
            self.credentials.tls_server_name or self.host,
        )
        try:
            connection.request(method, target, body=payload, headers=headers)
        except BaseException:
            connection.close()
            raise
        return connection

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        connection = self._send(method, path, query, body, content_type)
        try:
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status >= 400:
            raise _error(response, data)
        result = json.loads(data) if data else {}
        return result if isinstance(result, dict) else {}

    @contextmanager
    def stream(
        self, path: str, query: dict[str, Any], read_timeout: float | None
    ) -> Iterator[http.client.HTTPResponse]:
        """A GET whose body arrives over time (watch, log), read with `read_timeout`."""
        connection = self._send("GET", path, query, None, "")
        try:
            response = connection.getresponse()
            if response.status >= 400:
                raise _error(response, response.read())
            if connection.sock is not None:
                connection.sock.settimeout(read_timeout)
            yield response
        finally:
            connection.close()


class Kube:
    def __init__(self, config: Config) -> None:
        self.config = config
        try:
            credentials = self._credentials(config)
            self._http = _Http(credentials, REQUEST_SECONDS)
        except (K8sccError, ssl.SSLError, ValueError) as error:
            raise K8sccError(f"cannot load Kubernetes credentials: {error}") from None
        self.namespace = config.namespace or credentials.namespace or "default"
        # Lowered while cleaning up after SIGTERM: the peer kills us 5 s later.
        self.retry_seconds = RETRY_SECONDS
        self._outage_seen = -AUTHZ_WARMUP_SECONDS

    @staticmethod
    def _credentials(config: Config) -> kubeconfig.Credentials:
        """An explicit kubeconfig, else the pod's ServiceAccount. The API address comes from
        KUBERNETES_SERVICE_HOST/PORT when the peer propagates them, else from the config, so
        in-cluster works with the peer's pruned environment."""
        if config.kubeconfig:
            return kubeconfig.from_file(config.kubeconfig)
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if host and ":" in host:
            host = f"[{host}]"  # IPv6
        server = f"https://{host}:{port}" if host else config.kubernetes_server
        return kubeconfig.in_cluster(config.service_account_dir, server)

    def _transient(self, error: Exception) -> bool:
        """Worth retrying: the API server is unavailable, or came back so recently that its
        authorization caches may not know our Role yet (it answers 401/403 meanwhile)."""
        if _unavailable(error):
            self._outage_seen = time.monotonic()
            return True
        warming = time.monotonic() - self._outage_seen < AUTHZ_WARMUP_SECONDS
        return warming and _status_code(error) in (401, 403)

    def _call(self, what: str, action: Callable[[], T], tolerate: tuple[int, ...] = ()) -> T | None:
        """`action()`, retried while the failure is transient; None for a tolerated status.
        A Retry-After that reaches past the retry window ends it at once: a retry before the
        server's time would only be turned away again."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                return action()
            except (ApiError, *TRANSPORT_ERRORS) as error:
                if _status_code(error) in tolerate:
                    return None
                pause = _pause(error, delay)
                if not self._transient(error) or time.monotonic() + pause > deadline:
                    raise K8sccError(f"{what}: {describe(error)}") from None
                time.sleep(pause)
                delay = min(delay * 2, 3.0)

    def _path(self, plural: str, name: str = "", suffix: str = "") -> str:
        path = f"/api/v1/namespaces/{quote(self.namespace)}/{plural}"
        if name:
            path += f"/{quote(name)}"
        return path + suffix

    # -- objects ------------------------------------------------------------------------------

    def _create(self, plural: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The created object, or None when another one of that name exists already.

        A create is retried like any request although an attempt whose answer was lost may
        have stored the object. That is safe because every attempt sends the same random
        create id annotation: a 409 on a retry reads the object and adopts it exactly when it
        carries the labels and annotations we sent, create id included; anything else is
        another object of that name. Name and labels alone cannot tell: a chaincode pod's are
        the same for every launch of its package."""
        metadata = manifest["metadata"]
        name = metadata["name"]
        annotations = {
            **(metadata.get("annotations") or {}),
            names.ANNOTATION_CREATE_ID: secrets.token_hex(8),
        }
        sent = {**manifest, "metadata": {**metadata, "annotations": annotations}}
        attempts = 0

        def attempt() -> dict[str, Any] | None:
            nonlocal attempts
            attempts += 1
            try:
                return self._http.request(
                    "POST", self._path(plural), {"fieldManager": FIELD_MANAGER}, sent
                )
            except ApiError as error:
                if error.code != 409:
                    raise
            if attempts == 1:
                return None
            found = self._http.request("GET", self._path(plural, name))
            return found if _carries(found, sent) else None

        return self._call(
            f"cannot create {plural[:-1]} {name} in namespace {self.namespace}", attempt
        )

    def create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        pod = self._create("pods", manifest)
        if pod is None:
            name = manifest["metadata"]["name"]
            raise K8sccError(f"pod {name} exists already and was not created by this step")
        return pod

    def replace_pod(self, manifest: dict[str, Any], wait_seconds: float) -> dict[str, Any]:
        """Creates the pod, first removing a previous incarnation of the same name."""
        name = manifest["metadata"]["name"]
        pod = self._create("pods", manifest)
        if pod is None:
            self.delete_pod(name, grace=0)
            if not self.wait_pod_gone(name, wait_seconds):
                raise K8sccError(f"previous pod {name} did not go away within {wait_seconds:.0f} s")
            pod = self.create_pod(manifest)
        return pod

    def replace_secret(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Creates the Secret, first removing one of the same name left by an earlier launch."""
        secret = self._create("secrets", manifest)
        if secret is None:
            self.delete_secret(manifest["metadata"]["name"])
            secret = self._create("secrets", manifest)
            if secret is None:
                raise K8sccError(f"secret {manifest['metadata']['name']} exists already")
        return secret

    def set_secret_owners(self, name: str, owners: list[dict[str, Any]]) -> None:
        self._call(
            f"cannot update secret {name}",
            lambda: self._http.request(
                "PATCH",
                self._path("secrets", name),
                {"fieldManager": FIELD_MANAGER},
                {"metadata": {"ownerReferences": owners}},
                "application/merge-patch+json",
            ),
        )

    def get_pod(self, name: str) -> dict[str, Any] | None:
        return self._call(
            f"cannot read pod {name}",
            lambda: self._http.request("GET", self._path("pods", name)),
            tolerate=(404,),
        )

    def _delete(self, plural: str, name: str, grace: int | None, uid: str | None) -> None:
        """DELETE; given `uid`, with a precondition so that only that incarnation of the name
        goes: a `run` that ends must never remove what the launch replacing it created. A
        failed precondition (409) or a missing object (404) is fine."""
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        self._call(
            f"cannot delete {plural[:-1]} {name}",
            lambda: self._http.request("DELETE", self._path(plural, name), body=options),
            tolerate=(404, 409),
        )

    def delete_pod(self, name: str, grace: int | None = None, uid: str | None = None) -> None:
        self._delete("pods", name, grace, uid)

    def delete_secret(self, name: str, uid: str | None = None) -> None:
        self._delete("secrets", name, None, uid)

    def wait_pod_gone(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get_pod(name) is None:
                return True
            time.sleep(0.2)
        return False

    def peer_owner(self, pod_name: str) -> Owner | None:
        """The peer's own pod, if it runs in one in our namespace."""
        pod = self.get_pod(pod_name)
        if pod is None:
            return None
        return Owner(name=pod["metadata"]["name"], uid=pod["metadata"]["uid"])

    # -- watching and logs --------------------------------------------------------------------

    def _pod_events(
        self, name: str, version: str, stop: threading.Event
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch request; an ERROR event (such as 410 Gone) is raised as its Status."""
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": version,
            "timeoutSeconds": WATCH_SECONDS,
        }
        with self._http.stream(self._path("pods"), query, WATCH_READ_SECONDS) as response:
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = int(body.get("code") or 500)
                    raise ApiError(code, _status_text(body, code))
                yield kind, body
                if stop.is_set():
                    return

    def watch_pod(
        self, name: str, uid: str, resource_version: str, stop: threading.Event
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events of pod `name` with `uid` from `resource_version` on, resumed after server
        timeouts, dropped connections and 410 Gone (then re-read, so no state change is
        missed). A pod of that name with another uid has replaced ours: ours is reported
        DELETED, as when the name is gone."""
        gone = ("DELETED", {"metadata": {"name": name, "uid": uid}})
        version: str | None = resource_version
        delay = 0.2
        while not stop.is_set():
            if version is None:
                current = self.get_pod(name)
                if current is None or current["metadata"].get("uid") != uid:
                    yield gone
                    return
                version = current["metadata"]["resourceVersion"]
                yield "MODIFIED", current
            try:
                for kind, data in self._pod_events(name, version, stop):
                    if data["metadata"].get("uid") != uid:
                        yield gone
                        return
                    version = data["metadata"]["resourceVersion"]
                    delay = 0.2
                    yield kind, data
                    if stop.is_set():
                        return
            except (ApiError, ValueError, *TRANSPORT_ERRORS) as error:
                if _status_code(error) == 410:
                    version = None
                elif isinstance(error, ValueError) or not self._transient(error):
                    raise K8sccError(f"watching pod {name}: {describe(error)}") from None
                stop.wait(_pause(error, delay))
                delay = min(delay * 2, 3.0)

    def follow_log(
        self, name: str, container: str, on_line: Callable[[str], None], stop: threading.Event
    ) -> None:
        """Streams the container's log line by line until it ends. After a dropped connection it
        reconnects a little before the last line seen and skips what it already passed on."""
        seen = ""
        since: int | None = None
        while not stop.is_set():
            resume_after = seen
            query: dict[str, Any] = {"container": container, "follow": "true", "timestamps": "true"}
            if since is not None:
                query["sinceSeconds"] = since
            try:
                # No read timeout: a chaincode may print nothing for hours.
                with self._http.stream(self._path("pods", name, "/log"), query, None) as response:
                    for raw in response:
                        stamp, _, line = raw.decode(errors="replace").rstrip("\r\n").partition(" ")
                        key = _stamp_key(stamp)
                        if resume_after and key <= resume_after:
                            continue
                        resume_after = ""
                        seen = key
                        on_line(line)
                return
            except (ApiError, *TRANSPORT_ERRORS) as error:
                code = _status_code(error)
                if code == 404:
                    return
                # 400: the container is not running yet; else only transient failures retry.
                if code != 400 and not self._transient(error):
                    raise K8sccError(f"reading the log of pod {name}: {describe(error)}") from None
                if seen:
                    since = max(1, int(time.time() - _stamp_seconds(seen)) + 2)
                stop.wait(_pause(error, 0.5))

    # -- k8scc doctor -------------------------------------------------------------------------

    def answer_quickly(self, seconds: float) -> None:
        """One attempt per request under a short timeout: `k8scc doctor` reports an API server
        that is down or unreachable at once instead of waiting for it to come back."""
        self.retry_seconds = 0.0
        self._http.timeout = seconds

    def server(self) -> str:
        return self._http.credentials.server

    def whoami(self) -> str:
        """The username the API server authenticates us as (SelfSubjectReview)."""
        review = self._call(
            f"asking {self.server()} who we are",
            lambda: self._http.request(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            ),
        )
        user = ((review or {}).get("status") or {}).get("userInfo") or {}
        return str(user.get("username") or "an anonymous user")

    def allowed(self, verb: str, resource: str) -> bool:
        """Whether we may `verb` `resource` (or `resource/subresource`) of the core API group
        in our namespace (SelfSubjectAccessReview)."""
        kind, _, subresource = resource.partition("/")
        attributes = {"namespace": self.namespace, "verb": verb, "group": "", "resource": kind}
        if subresource:
            attributes["subresource"] = subresource
        review = self._call(
            f"cannot ask whether we may {verb} {resource}",
            lambda: self._http.request(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                body={
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": attributes},
                },
            ),
        )
        return bool(((review or {}).get("status") or {}).get("allowed"))

    def dry_run_create(self, manifest: dict[str, Any]) -> None:
        """Creates the Pod or Secret with dryRun=All: admission runs, nothing is stored."""
        plural = "pods" if manifest["kind"] == "Pod" else "secrets"
        self._call(
            "rejected",
            lambda: self._http.request(
                "POST",
                self._path(plural),
                {"fieldManager": FIELD_MANAGER, "dryRun": "All"},
                manifest,
            ),
        )


def _carries(found: dict[str, Any], sent: dict[str, Any]) -> bool:
    """Whether `found` has every label and annotation `sent` had; admission may add more."""
    have, want = found.get("metadata") or {}, sent["metadata"]
    return all(
        dict(want.get(key) or {}).items() <= dict(have.get(key) or {}).items()
        for key in ("labels", "annotations")
    )


def _stamp_key(stamp: str) -> str:
    """RFC 3339 timestamps with the fraction padded, so they sort as strings."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{seconds}.{fraction.ljust(9, '0')}"


def _stamp_seconds(key: str) -> float:
    try:
        parsed = datetime.strptime(key[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return time.time()
    return parsed.timestamp()
