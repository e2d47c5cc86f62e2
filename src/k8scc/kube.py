"""k8scc's Kubernetes operations: creating and deleting its pods and Secrets, and watching one
pod. Transient failures (connection refused while the API server restarts, 5xx, 429) are
retried with bounded backoff, or after the Retry-After of a 429 or 503; everything else becomes
one K8sccError line naming the object and what Kubernetes said. The HTTP itself is in
transport.py, following a log in podlog.py.
"""

from __future__ import annotations

import json
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import quote

from k8scc import kubeconfig, names
from k8scc.config import Config
from k8scc.errors import K8sccError
from k8scc.http1 import Response
from k8scc.record import field, mutable_record
from k8scc.transport import (
    TRANSPORT_ERRORS,
    ApiError,
    Http,
    describe,
    pause,
    status_code,
    status_text,
    unavailable,
)

if TYPE_CHECKING:
    from k8scc.podexec import Exited

T = TypeVar("T")
RETRY_SECONDS = 30.0
AUTHZ_WARMUP_SECONDS = 15.0
WATCH_SECONDS = 60
REQUEST_SECONDS = 15.0
# A watch is silent for up to WATCH_SECONDS before the server ends it; only longer is a dead link.
WATCH_READ_SECONDS = WATCH_SECONDS + 30
FIELD_MANAGER = "k8scc"


@mutable_record
class Incarnation:
    """One create call's object. Named, with its random create id, before the request goes
    out, so that a step stopped while the create is under way can still find what it stored;
    `uid` is known once the create has answered."""

    plural: str
    name: str
    create_id: str = field(default_factory=lambda: names.nonce(8))
    sent: bool = False  # a create request went out: the object may exist
    uid: str | None = None


class Kube:
    def __init__(self, credentials: kubeconfig.Credentials, namespace: str) -> None:
        try:
            self._http = Http(credentials, REQUEST_SECONDS)
        except (ssl.SSLError, ValueError) as error:
            raise K8sccError(f"cannot load Kubernetes credentials: {error}") from None
        self.namespace = namespace
        # Where the peer itself runs, as its credentials say: the namespace of its account.
        self.peer_namespace = credentials.namespace or namespace
        self.retry_seconds = RETRY_SECONDS
        self._deadline: float | None = None
        self._outage_seen = -AUTHZ_WARMUP_SECONDS

    @classmethod
    def connect(cls, config: Config) -> Kube:
        """The client the configuration names, in its namespace or the credentials' own."""
        try:
            credentials = cls._credentials(config)
        except (K8sccError, ssl.SSLError, ValueError) as error:
            raise K8sccError(f"cannot load Kubernetes credentials: {error}") from None
        return cls(credentials, config.namespace or credentials.namespace or "default")

    def open_ahead(self) -> None:
        """Starts connecting to the API server now, so that the first request finds its
        handshakes done."""
        self._http.open_ahead()

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
        if unavailable(error):
            self._outage_seen = time.monotonic()
            return True
        warming = time.monotonic() - self._outage_seen < AUTHZ_WARMUP_SECONDS
        return warming and status_code(error) in (401, 403)

    def finish_by(self, deadline: float) -> None:
        """Every request from now on, retries included, ends by `deadline` (a time.monotonic()
        value): cleaning up after SIGTERM must be done before the peer's SIGKILL."""
        self._deadline = deadline

    def _call(self, what: str, action: Callable[[], T], tolerate: tuple[int, ...] = ()) -> T | None:
        """`action()`, retried while the failure is transient; None for a tolerated status.
        A Retry-After that reaches past the retry window ends it at once: a retry before the
        server's time would only be turned away again."""
        deadline = time.monotonic() + self.retry_seconds
        if self._deadline is not None:
            deadline = min(deadline, self._deadline)
        delay = 0.2
        while True:
            if self._deadline is not None:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise K8sccError(f"{what}: out of time")
                self._http.timeout = min(REQUEST_SECONDS, left)
            try:
                return action()
            except (ApiError, *TRANSPORT_ERRORS) as error:
                if status_code(error) in tolerate:
                    return None
                wait = pause(error, delay)
                if not self._transient(error) or time.monotonic() + wait > deadline:
                    raise K8sccError(f"{what}: {describe(error)}") from None
                time.sleep(wait)
                delay = min(delay * 2, 3.0)

    def _path(self, plural: str, name: str = "", suffix: str = "") -> str:
        path = f"/api/v1/namespaces/{quote(self.namespace)}/{plural}"
        if name:
            path += f"/{quote(name)}"
        return path + suffix

    # -- objects ------------------------------------------------------------------------------

    def _create(self, manifest: dict[str, Any], incarnation: Incarnation) -> dict[str, Any] | None:
        """The created object, or None when another one of that name exists already.

        A create is retried like any request although an attempt whose answer was lost may
        have stored the object. That is safe because every attempt sends the same random
        create id annotation: a 409 on a retry reads the object and adopts it exactly when it
        carries the labels and annotations we sent, create id included; anything else is
        another object of that name. Name and labels alone cannot tell: a chaincode pod's are
        the same for every launch of its package."""
        metadata = manifest["metadata"]
        name, plural = incarnation.name, incarnation.plural
        annotations = {
            **(metadata.get("annotations") or {}),
            names.ANNOTATION_CREATE_ID: incarnation.create_id,
        }
        sent = {**manifest, "metadata": {**metadata, "annotations": annotations}}
        attempts = 0

        def attempt() -> dict[str, Any] | None:
            nonlocal attempts
            attempts += 1
            incarnation.sent = True
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

        created = self._call(
            f"cannot create {plural[:-1]} {name} in namespace {self.namespace}", attempt
        )
        if created is not None:
            incarnation.uid = created["metadata"]["uid"]
        return created

    def create(self, manifest: dict[str, Any], incarnation: Incarnation) -> dict[str, Any]:
        """Creates a pod or Secret whose name only this step uses."""
        created = self._create(manifest, incarnation)
        if created is None:
            raise K8sccError(
                f"{incarnation.plural[:-1]} {incarnation.name} exists already"
                " and was not created by this step"
            )
        return created

    def replace_pod(
        self, manifest: dict[str, Any], incarnation: Incarnation, wait_seconds: float
    ) -> dict[str, Any]:
        """Creates the pod, first removing a previous incarnation of the same name: gracefully,
        and only once the API server has deleted it, when its kubelet has stopped its
        containers, is the name reused, so two launches of one chaincode never overlap."""
        pod = self._create(manifest, incarnation)
        if pod is None:
            previous = self.get_pod(incarnation.name)
            if previous is not None:
                _refuse_another_peers(previous, manifest)
                uid = previous["metadata"]["uid"]
                self.delete_pod(incarnation.name, uid=uid)
                if not self.wait_pod_deleted(incarnation.name, uid, wait_seconds):
                    raise K8sccError(
                        f"previous pod {incarnation.name} did not stop within {wait_seconds:.0f} s"
                    )
            pod = self.create(manifest, incarnation)
        return pod

    def stop_pod(self, incarnation: Incarnation, grace: int | None = None) -> str | None:
        """Deletes the pod this incarnation stored, gracefully unless `grace` says otherwise;
        returns its uid, or None when there is no such pod. Without a uid (the step was stopped
        while the create was under way) the pod of the name is ours only if it carries our
        create id."""
        uid = incarnation.uid
        if uid is None and not incarnation.sent:
            return None
        if uid is None:
            pod = self.get_pod(incarnation.name)
            annotations = (pod or {}).get("metadata", {}).get("annotations") or {}
            if pod is None or annotations.get(names.ANNOTATION_CREATE_ID) != incarnation.create_id:
                return None
            uid = pod["metadata"]["uid"]
        self.delete_pod(incarnation.name, grace, uid)
        return uid

    def remove_pod(
        self, incarnation: Incarnation, wait_seconds: float, grace: int | None = None
    ) -> bool:
        """Stops the pod and says whether it is gone from the API within `wait_seconds`."""
        uid = self.stop_pod(incarnation, grace)
        return uid is None or self.wait_pod_deleted(incarnation.name, uid, wait_seconds)

    def get_pod(self, name: str) -> dict[str, Any] | None:
        return self._call(
            f"cannot read pod {name}",
            lambda: self._http.request("GET", self._path("pods", name)),
            tolerate=(404,),
        )

    def get_claim(self, name: str) -> dict[str, Any] | None:
        return self._call(
            f"cannot read persistentvolumeclaim {name}",
            lambda: self._http.request("GET", self._path("persistentvolumeclaims", name)),
            tolerate=(404,),
        )

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        found = self._call(
            f"cannot list pods {selector}",
            lambda: self._http.request("GET", self._path("pods"), {"labelSelector": selector}),
        )
        return list((found or {}).get("items") or [])

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

    def remove_secret(self, incarnation: Incarnation) -> None:
        """Deletes the Secret this incarnation stored, if a create went out at all; its name
        is the launch's own, so without a uid the name alone is safe."""
        if incarnation.sent:
            self.delete_secret(incarnation.name, incarnation.uid)

    def wait_pod_deleted(self, name: str, uid: str, seconds: float) -> bool:
        """Whether pod `name` with `uid` is gone from the API within `seconds`: its DELETED
        event, or a pod of that name with another uid."""
        until = time.monotonic() + seconds
        pod = self.get_pod(name)
        if pod is None or pod["metadata"].get("uid") != uid:
            return True
        version = pod["metadata"]["resourceVersion"]
        events = self.watch_pod(name, uid, version, threading.Event(), until=until)
        return any(kind == "DELETED" for kind, _ in events)

    # -- watching and logs --------------------------------------------------------------------

    def _pod_events(
        self, name: str, version: str, stop: threading.Event, seconds: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch request; an ERROR event (such as 410 Gone) is raised as its Status."""
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": version,
            "timeoutSeconds": seconds,
        }
        # Past its timeoutSeconds a silent watch is a dead link; a bounded wait allows 1 s.
        read_seconds = WATCH_READ_SECONDS if seconds == WATCH_SECONDS else seconds + 1
        with self._http.stream(self._path("pods"), query, read_seconds) as response:
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = int(body.get("code") or 500)
                    raise ApiError(code, status_text(body, code))
                yield kind, body
                if stop.is_set():
                    return

    def watch_pod(
        self,
        name: str,
        uid: str,
        resource_version: str,
        stop: threading.Event,
        until: float | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events of pod `name` with `uid` from `resource_version` on, until `stop` is set or
        the time.monotonic() `until`, resumed after server timeouts, dropped connections and
        410 Gone (then re-read, so no state change is missed). A pod of that name with another
        uid has replaced ours: ours is reported DELETED, as when the name is gone."""
        gone = ("DELETED", {"metadata": {"name": name, "uid": uid}})
        version: str | None = resource_version
        delay = 0.2
        while not stop.is_set():
            seconds = WATCH_SECONDS
            if until is not None:
                left = until - time.monotonic()
                if left <= 0:
                    return
                seconds = min(seconds, math.ceil(left))
            if version is None:
                current = self.get_pod(name)
                if current is None or current["metadata"].get("uid") != uid:
                    yield gone
                    return
                version = current["metadata"]["resourceVersion"]
                yield "MODIFIED", current
            try:
                for kind, data in self._pod_events(name, version, stop, seconds):
                    if data["metadata"].get("uid") != uid:
                        yield gone
                        return
                    version = data["metadata"]["resourceVersion"]
                    delay = 0.2
                    yield kind, data
                    # A deleted pod never returns: watching on would only cost requests.
                    if stop.is_set() or kind == "DELETED":
                        return
            except (ApiError, ValueError, *TRANSPORT_ERRORS) as error:
                if status_code(error) == 410:
                    version = None
                elif isinstance(error, ValueError) or not self._transient(error):
                    raise K8sccError(f"watching pod {name}: {describe(error)}") from None
                stop.wait(pause(error, delay))
                delay = min(delay * 2, 3.0)

    def exec(
        self,
        name: str,
        container: str,
        command: list[str],
        stdin: BinaryIO | None,
        on_stdout: Callable[[bytes], None],
        read_seconds: float,
    ) -> Exited:
        """Runs `command` in the pod's container (podexec.py). Opening the stream is retried
        like any request; once it is open nothing is repeated, since the command has run."""
        # Loaded here: only files through the API stream, and a launch's stream comes once its
        # pod is created, off the path to the create.
        from k8scc import podexec  # noqa: PLC0415
        from k8scc.websocket import WebSocket, WebSocketError  # noqa: PLC0415

        query = [("container", container), ("stdout", "true"), ("stderr", "true")]
        query += [("stdin", "true")] if stdin is not None else []
        query += [("command", part) for part in command]
        path = self._path("pods", name, "/exec")

        def attempt() -> tuple[socket.socket, str]:
            try:
                return self._http.upgrade(path, query, podexec.PROTOCOLS)
            except ApiError as error:
                if error.code != 403:
                    raise
                # The server names the verb it checked first; a refused upgrade may name none.
                hint = ' (streams need verbs create and get on resource "pods/exec")'
                raise ApiError(403, error.message + hint) from None

        opened = self._call(f"cannot open a stream into pod {name}", attempt)
        assert opened is not None  # nothing is tolerated
        sock, protocol = opened
        stream = WebSocket(sock, read_seconds)
        try:
            return podexec.converse(stream, protocol, stdin, on_stdout)
        except WebSocketError as error:
            raise K8sccError(f"stream of pod {name}: {error}") from None
        finally:
            stream.close()

    @contextmanager
    def log_stream(
        self, name: str, query: dict[str, Any], read_seconds: float
    ) -> Iterator[Response]:
        """The pod's log as the server streams it (podlog.py reads it)."""
        with self._http.stream(self._path("pods", name, "/log"), query, read_seconds) as response:
            yield response

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


def _refuse_another_peers(pod: dict[str, Any], ours: dict[str, Any]) -> None:
    """A pod of our name made by another peer process given the same peer id (its instance
    annotation differs) is that peer's live launch: replacing it, or its Secret, would start a
    loop of each peer deleting the other's. Pods from before the annotation count as ours."""
    annotations = pod["metadata"].get("annotations") or {}
    theirs = annotations.get(names.ANNOTATION_PEER_INSTANCE)
    mine = (ours["metadata"].get("annotations") or {}).get(names.ANNOTATION_PEER_INSTANCE)
    if theirs and mine and theirs != mine:
        peer_id = annotations.get(names.ANNOTATION_PEER_ID)
        raise K8sccError(
            f"pod {pod['metadata']['name']} belongs to another peer with the same id"
            f" {peer_id!r}, in {theirs}: give each peer its own peer.id (or CORE_PEER_ID)"
        )


def _carries(found: dict[str, Any], sent: dict[str, Any]) -> bool:
    """Whether `found` has every label and annotation `sent` had; admission may add more."""
    have, want = found.get("metadata") or {}, sent["metadata"]
    return all(
        dict(want.get(key) or {}).items() <= dict(have.get(key) or {}).items()
        for key in ("labels", "annotations")
    )
