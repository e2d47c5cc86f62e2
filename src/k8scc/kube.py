"""All of k8scc's Kubernetes I/O: the client, creating and deleting its objects, watching one
pod and following its log. Transient failures (connection refused while the API server
restarts, 5xx, 429) are retried with bounded backoff; everything else becomes one K8sccError
line naming the object and what Kubernetes said.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from lightkube import ApiError, Client, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.authentication_v1 import SelfSubjectReview
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import Pod, Secret

from k8scc.config import Config
from k8scc.errors import K8sccError
from k8scc.render import Owner

T = TypeVar("T")
RETRY_SECONDS = 30.0
AUTHZ_WARMUP_SECONDS = 15.0
WATCH_SECONDS = 60


def _status_code(error: Exception) -> int | None:
    if isinstance(error, ApiError):
        return error.status.code
    if isinstance(error, httpx2.HTTPStatusError):
        return error.response.status_code
    return None


def _unavailable(error: Exception) -> bool:
    code = _status_code(error)
    if code is not None:
        return code in (429, 500, 502, 503, 504)
    return isinstance(error, httpx2.TransportError)


def describe(error: Exception) -> str:
    """What Kubernetes said, in one line."""
    if isinstance(error, ApiError):
        return str(error.status.message or error.status.reason or error)
    if isinstance(error, httpx2.HTTPStatusError):
        # Streamed responses (watch, log) carry the Status in a body not read yet.
        try:
            error.response.read()
            message = error.response.json().get("message")
        except Exception:
            message = None
        return str(message or f"HTTP {error.response.status_code}")
    return f"{type(error).__name__}: {error}"


class Kube:
    def __init__(self, config: Config) -> None:
        self.config = config
        kubeconfig = self._kubeconfig(config)
        self.client = Client(kubeconfig, field_manager="k8scc", timeout=httpx2.Timeout(15.0))
        self.namespace = self._namespace(config, kubeconfig)
        # Lowered while cleaning up after SIGTERM: the peer kills us 5 s later.
        self.retry_seconds = RETRY_SECONDS
        self._outage_seen = -AUTHZ_WARMUP_SECONDS

    @staticmethod
    def _kubeconfig(config: Config) -> KubeConfig:
        """An explicit kubeconfig, else the pod's ServiceAccount. The API address comes from
        KUBERNETES_SERVICE_HOST/PORT when the peer propagates them, else from the config, so
        in-cluster works with the peer's pruned environment."""
        try:
            if config.kubeconfig:
                return KubeConfig.from_file(config.kubeconfig)
            account = config.service_account_dir
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if host and ":" in host:
                host = f"[{host}]"  # IPv6
            server = f"https://{host}:{port}" if host else config.kubernetes_server
            if not (account / "token").is_file():
                raise K8sccError(
                    f"no kubeconfig configured and no ServiceAccount token at {account}/token"
                )
            return KubeConfig.from_one(
                cluster=Cluster(server=server, certificate_auth=str(account / "ca.crt")),
                user=User(token_file=str(account / "token")),
                namespace=_read(account / "namespace"),
            )
        except K8sccError:
            raise
        except Exception as error:
            raise K8sccError(f"cannot load Kubernetes credentials: {describe(error)}") from None

    @staticmethod
    def _namespace(config: Config, kubeconfig: KubeConfig) -> str:
        if config.namespace:
            return config.namespace
        context = kubeconfig.get()
        if context is not None and context.namespace:
            return str(context.namespace)
        return "default"

    def close(self) -> None:
        self.client.close()

    def _transient(self, error: Exception) -> bool:
        """Worth retrying: the API server is unavailable, or came back so recently that its
        authorization caches may not know our Role yet (it answers 401/403 meanwhile)."""
        if _unavailable(error):
            self._outage_seen = time.monotonic()
            return True
        warming = time.monotonic() - self._outage_seen < AUTHZ_WARMUP_SECONDS
        return warming and _status_code(error) in (401, 403)

    def _call(self, what: str, action: Callable[[], T], tolerate: tuple[int, ...] = ()) -> T | None:
        """`action()`, retried while the failure is transient; None for a tolerated status."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                return action()
            except httpx2.HTTPError as error:
                if _status_code(error) in tolerate:
                    return None
                if not self._transient(error) or time.monotonic() + delay > deadline:
                    raise K8sccError(f"{what}: {describe(error)}") from None
                time.sleep(delay)
                delay = min(delay * 2, 3.0)

    # -- objects ------------------------------------------------------------------------------

    def _create(self, kind: Any, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The created object, or None when one of that name exists already."""
        name = manifest["metadata"]["name"]
        created = self._call(
            f"cannot create {kind.__name__.lower()} {name} in namespace {self.namespace}",
            lambda: self.client.create(kind.from_dict(manifest), namespace=self.namespace),
            tolerate=(409,),
        )
        return None if created is None else dict(created.to_dict())

    def create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        pod = self._create(Pod, manifest)
        if pod is None:
            raise K8sccError(f"pod {manifest['metadata']['name']} exists already")
        return pod

    def replace_pod(self, manifest: dict[str, Any], wait_seconds: float) -> dict[str, Any]:
        """Creates the pod, first removing a previous incarnation of the same name."""
        name = manifest["metadata"]["name"]
        pod = self._create(Pod, manifest)
        if pod is None:
            self.delete_pod(name, grace=0)
            if not self.wait_pod_gone(name, wait_seconds):
                raise K8sccError(f"previous pod {name} did not go away within {wait_seconds:.0f} s")
            pod = self.create_pod(manifest)
        return pod

    def replace_secret(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Creates the Secret, first removing one of the same name left by an earlier launch."""
        secret = self._create(Secret, manifest)
        if secret is None:
            self.delete_secret(manifest["metadata"]["name"])
            secret = self._create(Secret, manifest)
            if secret is None:
                raise K8sccError(f"secret {manifest['metadata']['name']} exists already")
        return secret

    def set_secret_owners(self, name: str, owners: list[dict[str, Any]]) -> None:
        self._call(
            f"cannot update secret {name}",
            lambda: self.client.patch(
                Secret, name, {"metadata": {"ownerReferences": owners}}, namespace=self.namespace
            ),
        )

    def get_pod(self, name: str) -> dict[str, Any] | None:
        pod = self._call(
            f"cannot read pod {name}",
            lambda: self.client.get(Pod, name, namespace=self.namespace),
            tolerate=(404,),
        )
        return None if pod is None else dict(pod.to_dict())

    def _delete(self, kind: Any, name: str, grace: int | None, uid: str | None) -> None:
        """DELETE; given `uid`, with a precondition so that only that incarnation of the name
        goes: a `run` that ends must never remove what the launch replacing it created. A
        failed precondition (409) or a missing object (404) is fine. lightkube's delete()
        sends no body, so its request builder carries the DeleteOptions."""
        generic = self.client._client
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        if uid is not None:
            options["preconditions"] = {"uid": uid}

        def delete() -> None:
            request = generic.prepare_request("delete", kind, name=name, namespace=self.namespace)
            request.data = options
            response = generic.send(generic.build_adapter_request(request))
            response.raise_for_status()

        self._call(f"cannot delete {kind.__name__.lower()} {name}", delete, tolerate=(404, 409))

    def delete_pod(self, name: str, grace: int | None = None, uid: str | None = None) -> None:
        self._delete(Pod, name, grace, uid)

    def delete_secret(self, name: str, uid: str | None = None) -> None:
        self._delete(Secret, name, None, uid)

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

    def watch_pod(
        self, name: str, resource_version: str, stop: threading.Event
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events of one pod (field selector on its name) from `resource_version` on, resumed
        after server timeouts, dropped connections and 410 Gone (then re-read, so no state
        change is missed)."""
        version: str | None = resource_version
        delay = 0.2
        while not stop.is_set():
            if version is None:
                current = self.get_pod(name)
                if current is None:
                    yield "DELETED", {"metadata": {"name": name}}
                    return
                version = current["metadata"]["resourceVersion"]
                yield "MODIFIED", current
            try:
                for kind, pod in self.client.watch(
                    Pod,
                    namespace=self.namespace,
                    fields={"metadata.name": name},
                    resource_version=version,
                    server_timeout=WATCH_SECONDS,
                ):
                    data = dict(pod.to_dict())
                    version = data["metadata"]["resourceVersion"]
                    delay = 0.2
                    yield kind, data
                    if stop.is_set():
                        return
            except httpx2.HTTPError as error:
                if _status_code(error) == 410:
                    version = None
                elif not self._transient(error):
                    raise K8sccError(f"watching pod {name}: {describe(error)}") from None
                stop.wait(delay)
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
            try:
                for raw in self.client.log(
                    name,
                    namespace=self.namespace,
                    container=container,
                    follow=True,
                    timestamps=True,
                    since=since,
                    newlines=False,
                ):
                    stamp, _, line = raw.partition(" ")
                    key = _stamp_key(stamp)
                    if resume_after and key <= resume_after:
                        continue
                    resume_after = ""
                    seen = key
                    on_line(line)
                return
            except httpx2.HTTPError as error:
                code = _status_code(error)
                if code == 404:
                    return
                # 400: the container is not running yet; else only transient failures retry.
                if code != 400 and not self._transient(error):
                    raise K8sccError(f"reading the log of pod {name}: {describe(error)}") from None
                if seen:
                    since = max(1, int(time.time() - _stamp_seconds(seen)) + 2)
                stop.wait(0.5)

    # -- k8scc doctor -------------------------------------------------------------------------

    def answer_quickly(self, seconds: float) -> None:
        """One attempt per request under a short timeout: `k8scc doctor` reports an API server
        that is down or unreachable at once instead of waiting for it to come back."""
        self.retry_seconds = 0.0
        self.client.close()
        self.client = Client(
            self._kubeconfig(self.config), field_manager="k8scc", timeout=httpx2.Timeout(seconds)
        )

    def server(self) -> str:
        context = self._kubeconfig(self.config).get()
        return str(context.cluster.server) if context is not None else "the API server"

    def whoami(self) -> str:
        """The username the API server authenticates us as (SelfSubjectReview)."""
        review = self._call(
            f"asking {self.server()} who we are",
            lambda: self.client.create(SelfSubjectReview()),
        )
        user = review.status.userInfo if review and review.status else None
        return str(user.username) if user and user.username else "an anonymous user"

    def allowed(self, verb: str, resource: str) -> bool:
        """Whether we may `verb` `resource` (or `resource/subresource`) of the core API group
        in our namespace (SelfSubjectAccessReview)."""
        kind, _, subresource = resource.partition("/")
        attributes = ResourceAttributes(
            namespace=self.namespace,
            verb=verb,
            group="",
            resource=kind,
            subresource=subresource or None,
        )
        review = self._call(
            f"cannot ask whether we may {verb} {resource}",
            lambda: self.client.create(
                SelfSubjectAccessReview(
                    spec=SelfSubjectAccessReviewSpec(resourceAttributes=attributes)
                )
            ),
        )
        return bool(review and review.status and review.status.allowed)

    def dry_run_create(self, manifest: dict[str, Any]) -> None:
        """Creates the Pod or Secret with dryRun=All: admission runs, nothing is stored."""
        kind: Any = Pod if manifest["kind"] == "Pod" else Secret
        self._call(
            "rejected",
            lambda: self.client.create(
                kind.from_dict(manifest), namespace=self.namespace, dry_run=True
            ),
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


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
