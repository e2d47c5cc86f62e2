"""A node agent that makes the test-bed cluster run pods, behaving like a kubelet as far as the
API shows: it registers a Ready Node and renews its Lease, binds unscheduled pods to itself,
runs their containers as Linux processes (testbed.runtime), serves their logs through the
kubelet log endpoint (testbed.logserver) and writes pod status as a kubelet does.

Run it as its own process: `python -m testbed.node --kubeconfig K --workdir D [--image NAME=DIR]
[--unavailable-image NAME]`. It prints `ready` on stdout once the Node is registered.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import trustme
from lightkube import ALL_NS, ApiError, Client, KubeConfig
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import (
    ConfigMap,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    Secret,
    ServiceAccountToken,
)

from testbed import podspec, tools
from testbed.logserver import LogServer, LogStore
from testbed.objects import load
from testbed.runtime import Container, ContainerSpec, ExitStatus, Mount

# The PATH of the test bed's images: the host's, with Go on it as in Fabric's ccenv image.
DEFAULT_PATH = tools.host_path()
NODE_LABELS = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}


class PodConfigError(Exception):
    """A container cannot be configured (kubelet's CreateContainerConfigError)."""


class VolumeNotReadyError(Exception):
    """A volume's source does not exist yet; the kubelet keeps retrying (FailedMount)."""


def _watch(
    client: Client, stop: threading.Event, **selectors: Any
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Watches pods across namespaces, resuming after API errors until `stop` is set."""
    version: str | None = None
    while not stop.is_set():
        try:
            for kind, pod in client.watch(
                Pod, namespace=ALL_NS, resource_version=version, server_timeout=30, **selectors
            ):
                data = pod.to_dict()
                version = data["metadata"].get("resourceVersion")
                yield kind, data
                if stop.is_set():
                    return
        except (httpx2.HTTPError, ApiError) as error:
            if isinstance(error, ApiError) and error.status.code == 410:
                version = None
            stop.wait(0.5)


@dataclass
class PodWorker:
    """Runs one pod from its binding to its deletion."""

    agent: NodeAgent
    pod: dict[str, Any]
    deleting: threading.Event = field(default_factory=threading.Event)
    gone: threading.Event = field(default_factory=threading.Event)
    containers: dict[str, Container] = field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    init_statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    status_lock: threading.Lock = field(default_factory=threading.Lock)
    start_time: str | None = None
    finished: bool = False

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.pod["spec"])

    @property
    def root(self) -> Path:
        return self.agent.workdir / "pods" / self.uid

    # -- status -------------------------------------------------------------------------------

    def _patch_status(self, status: dict[str, Any]) -> None:
        """Retried, in order, until the API server takes it, as a kubelet's status sync does:
        a completion reported during an API server outage must not be lost."""
        with self.status_lock:
            delay = 0.2
            # A stopping agent reports nothing more, like a kubelet that went away.
            while not self.agent.stop.is_set() and not self.gone.is_set():
                try:
                    self.agent.client.patch(
                        Pod.Status, self.name, {"status": status}, namespace=self.namespace
                    )
                    return
                except ApiError as error:
                    # 401/403 too: a restarted API server denies until its caches are warm.
                    if error.status.code not in (401, 403, 429, 500, 502, 503, 504):
                        return
                except httpx2.HTTPError:
                    pass
                self.agent.stop.wait(delay)
                delay = min(delay * 2, 2.0)

    def _container_status(self, container: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        running = "running" in state
        previous = self.statuses.get(container["name"]) or self.init_statuses.get(container["name"])
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"testbed://{self.uid}-{container['name']}",
            "ready": running,
            "started": running,
            "restartCount": (previous or {}).get("restartCount", 0),
            "state": state,
        }

    def _conditions(
        self, ready: bool, initialized: bool, reason: str | None
    ) -> list[dict[str, Any]]:
        stamp = podspec.now()

        def condition(kind: str, value: bool, why: str | None = None) -> dict[str, Any]:
            entry = {
                "type": kind,
                "status": "True" if value else "False",
                "lastTransitionTime": stamp,
            }
            if why and not value:
                entry["reason"] = why
            return entry

        return [
            condition("PodReadyToStartContainers", True),
            condition("Initialized", initialized, "ContainersNotInitialized"),
            condition("ContainersReady", ready, reason or "ContainersNotReady"),
            condition("Ready", ready, reason or "ContainersNotReady"),
        ]

    def _publish(
        self,
        phase: str,
        ready: bool = False,
        initialized: bool = True,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": self._conditions(
                ready,
                initialized,
                "PodCompleted" if reason is None and phase in ("Succeeded", "Failed") else None,
            ),
            "containerStatuses": list(self.statuses.values()),
        }
        if self.init_statuses:
            status["initContainerStatuses"] = list(self.init_statuses.values())
        if self.start_time:
            status["startTime"] = self.start_time
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        self._patch_status(status)

    def _set_waiting(self, reason: str, message: str | None = None, *, init: bool = False) -> None:
        waiting: dict[str, Any] = {"reason": reason}
        if message:
            waiting["message"] = message
        target = self.init_statuses if init else self.statuses
        key = "initContainers" if init else "containers"
        for container in self.spec.get(key) or []:
            if "terminated" not in target.get(container["name"], {}).get("state", {}):
                target[container["name"]] = self._container_status(container, {"waiting": waiting})
                self.agent.logs.set_waiting_reason(
                    self.namespace, self.name, container["name"], reason
                )

    # -- volumes and environment --------------------------------------------------------------

    def _volume_dir(self, name: str) -> Path:
        return self.root / "volumes" / name

    def _write_files(self, target: Path, files: dict[str, bytes], mode: int) -> None:
        target.mkdir(parents=True, exist_ok=True)
        groups = self._groups()
        for relative, content in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(mode)
            if groups:
                os.chown(path, 0, groups[0])

    def _keyed_files(
        self, data: dict[str, bytes], items: list[dict[str, Any]] | None
    ) -> dict[str, bytes]:
        if not items:
            return data
        return {item["path"]: data[item["key"]] for item in items if item["key"] in data}

    def _secret_data(self, name: str) -> dict[str, bytes]:
        secret = self.agent.client.get(Secret, name, namespace=self.namespace).to_dict()
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def _configmap_data(self, name: str) -> dict[str, bytes]:
        config = self.agent.client.get(ConfigMap, name, namespace=self.namespace).to_dict()
        return {k: v.encode() for k, v in (config.get("data") or {}).items()}

    def _source_data(self, kind: str, name: str, optional: bool) -> dict[str, bytes]:
        try:
            return self._secret_data(name) if kind == "secret" else self._configmap_data(name)
        except ApiError as error:
            if error.status.code == 404 and optional:
                return {}
            if error.status.code == 404:
                raise VolumeNotReadyError(f'{kind} "{name}" not found') from error
            raise

    def _token(self, audience: str | None, seconds: int) -> bytes:
        request = ServiceAccountToken(
            metadata=ObjectMeta(),
            spec=TokenRequestSpec(
                audiences=[audience] if audience else [],
                expirationSeconds=seconds,
                boundObjectRef=BoundObjectReference(
                    apiVersion="v1", kind="Pod", name=self.name, uid=self.uid
                ),
            ),
        )
        account = self.spec.get("serviceAccountName") or "default"
        issued = self.agent.client.create(request, account, namespace=self.namespace)
        return str(issued.status.token).encode()  # type: ignore[union-attr]

    def _prepare_volume(self, volume: dict[str, Any]) -> Path:
        name = volume["name"]
        target = self._volume_dir(name)
        if "persistentVolumeClaim" in volume:
            claim = self.agent.client.get(
                PersistentVolumeClaim,
                volume["persistentVolumeClaim"]["claimName"],
                namespace=self.namespace,
            )
            volume_name = claim.spec.volumeName if claim.spec else None
            if not volume_name:
                raise VolumeNotReadyError(f"persistentvolumeclaim {volume['name']} is not bound")
            pv = self.agent.client.get(PersistentVolume, volume_name).to_dict()["spec"]
            path = (pv.get("hostPath") or pv.get("local") or {}).get("path")
            if not path:
                raise PodConfigError(f"persistentvolume {volume_name} has no local path")
            return Path(path)
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)
            return target
        if "secret" in volume or "configMap" in volume:
            kind = "secret" if "secret" in volume else "configMap"
            source = volume[kind]
            source_name = source.get("secretName") if kind == "secret" else source.get("name")
            data = self._source_data(kind, source_name, bool(source.get("optional")))
            self._write_files(
                target,
                self._keyed_files(data, source.get("items")),
                source.get("defaultMode", 0o644),
            )
            return target
        if "projected" in volume:
            files: dict[str, bytes] = {}
            for projection in volume["projected"].get("sources") or []:
                if "serviceAccountToken" in projection:
                    token = projection["serviceAccountToken"]
                    files[token["path"]] = self._token(
                        token.get("audience"), token.get("expirationSeconds", 3600)
                    )
                for kind in ("secret", "configMap"):
                    if kind in projection:
                        source = projection[kind]
                        data = self._source_data(kind, source["name"], bool(source.get("optional")))
                        files.update(self._keyed_files(data, source.get("items")))
                if "downwardAPI" in projection:
                    for item in projection["downwardAPI"].get("items") or []:
                        files[item["path"]] = podspec.field_value(
                            self.pod, item["fieldRef"]["fieldPath"]
                        ).encode()
            self._write_files(target, files, volume["projected"].get("defaultMode", 0o644))
            return target
        if "downwardAPI" in volume:
            items = volume["downwardAPI"].get("items") or []
            self._write_files(
                target,
                {
                    i["path"]: podspec.field_value(self.pod, i["fieldRef"]["fieldPath"]).encode()
                    for i in items
                },
                volume["downwardAPI"].get("defaultMode", 0o644),
            )
            return target
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])
        raise PodConfigError(f"volume {name}: unsupported volume type")

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {
            "PATH": DEFAULT_PATH,
            "HOME": "/",
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.agent.api_port),
        }
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                data = self._env_source("secret", source["secretRef"])
            else:
                data = self._env_source("configMap", source["configMapRef"])
            env.update({prefix + k: v.decode() for k, v in data.items()})
        for variable in container.get("env") or []:
            value_from = variable.get("valueFrom")
            if value_from is None:
                env[variable["name"]] = podspec.expand(variable.get("value", ""), env)
            elif "fieldRef" in value_from:
                env[variable["name"]] = podspec.field_value(
                    self.pod, value_from["fieldRef"]["fieldPath"]
                )
            else:
                kind = "secret" if "secretKeyRef" in value_from else "configMap"
                ref = value_from["secretKeyRef" if kind == "secret" else "configMapKeyRef"]
                data = self._env_source(kind, ref)
                if ref["key"] in data:
                    env[variable["name"]] = data[ref["key"]].decode()
                elif not ref.get("optional"):
                    raise PodConfigError(
                        f"couldn't find key {ref['key']} in {kind} {self.namespace}/{ref['name']}"
                    )
        return env

    def _env_source(self, kind: str, ref: dict[str, Any]) -> dict[str, bytes]:
        try:
            if kind == "secret":
                return self._secret_data(ref["name"])
            return self._configmap_data(ref["name"])
        except ApiError as error:
            if error.status.code == 404:
                if ref.get("optional"):
                    return {}
                raise PodConfigError(f'{kind.lower()} "{ref["name"]}" not found') from error
            raise

    def _groups(self) -> tuple[int, ...]:
        context = self.spec.get("securityContext") or {}
        groups = [context["fsGroup"]] if "fsGroup" in context else []
        groups += list(context.get("supplementalGroups") or [])
        return tuple(groups)

    def _container_spec(self, container: dict[str, Any], volumes: dict[str, Path]) -> ContainerSpec:
        pod_context = self.spec.get("securityContext") or {}
        context = {**pod_context, **(container.get("securityContext") or {})}
        uid = context.get("runAsUser")
        if context.get("runAsNonRoot") and not uid:
            raise PodConfigError(
                "container has runAsNonRoot and image will run as root "
                f'(pod: "{self.name}_{self.namespace}({self.uid})", container: {container["name"]})'
            )
        image = container.get("image", "")
        # The host userland that stands in for images has no ENTRYPOINT: the command, if any,
        # then the arguments, are the whole argv, as a runtime runs an image without one.
        words = (container.get("command") or []) + (container.get("args") or [])
        if not words:
            raise PodConfigError(f"container {container['name']}: the test bed needs a command")
        env = self._env(container)
        argv = [podspec.expand(a, env) for a in words]
        mounts = []
        for mount in container.get("volumeMounts") or []:
            root = volumes[mount["name"]]
            source = podspec.safe_subpath(root, mount.get("subPath", ""))
            if not source.exists():
                source.mkdir(parents=True, exist_ok=True)
                source.chmod(root.stat().st_mode & 0o7777)
            mounts.append(Mount(mount["mountPath"], source, bool(mount.get("readOnly"))))
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        return ContainerSpec(
            argv=argv,
            env=env,
            working_dir=container.get("workingDir"),
            uid=int(uid or 0),
            gid=int(context.get("runAsGroup", 0)),
            groups=self._groups(),
            mounts=tuple(mounts),
            read_only_root=bool(context.get("readOnlyRootFilesystem")),
            memory_limit=podspec.quantity_bytes(limit) if limit else None,
            image_dir=self.agent.images.get(image),
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def _wait_for_images(self) -> bool:
        """Pending with ErrImagePull/ImagePullBackOff, like a node, until the pod is deleted."""
        every = (self.spec.get("initContainers") or []) + self.spec["containers"]
        missing = [c for c in every if c.get("image") in self.agent.unavailable_images]
        if not missing:
            return True
        image = missing[0]["image"]
        reason, message = (
            "ErrImagePull",
            f'failed to pull and unpack image "{image}": not found in the test bed',
        )
        while not self.deleting.is_set():
            self._set_waiting(reason, message)
            self._set_waiting(reason, message, init=True)
            self._publish("Pending", initialized=False)
            self.deleting.wait(2.0)
            reason, message = "ImagePullBackOff", f'Back-off pulling image "{image}"'
        return False

    def _prepare_volumes(self) -> dict[str, Path] | None:
        while not self.deleting.is_set():
            try:
                return {v["name"]: self._prepare_volume(v) for v in self.spec.get("volumes") or []}
            except VolumeNotReadyError:
                self.deleting.wait(1.0)
        return None

    def _run_container(
        self, container: dict[str, Any], spec: ContainerSpec, init: bool
    ) -> ExitStatus:
        name = container["name"]
        log = self.agent.logs.container(self.namespace, self.name, name)
        instance = Container(spec, log.append)
        with self.lock:
            self.containers[name] = instance
        started = podspec.now()
        instance.start()
        log.mark_started()
        target = self.init_statuses if init else self.statuses
        target[name] = self._container_status(container, {"running": {"startedAt": started}})
        if not init and all("running" in s["state"] for s in self.statuses.values()):
            self._publish("Running", ready=True)
        elif init:
            self._publish("Pending", initialized=False)
        deadline = self.spec.get("activeDeadlineSeconds")
        result = instance.wait(self._remaining(deadline))
        if result is None:
            self.deadline_exceeded = True
            instance.kill()
            result = instance.wait()
        assert result is not None
        instance.close()
        log.mark_exited()
        reason = (
            "OOMKilled"
            if result.oom_killed
            else ("Completed" if result.exit_code == 0 else "Error")
        )
        previous = target[name]
        target[name] = {
            **previous,
            "ready": False,
            "started": False,
            "state": {
                "terminated": {
                    "exitCode": result.exit_code,
                    "reason": reason,
                    "startedAt": started,
                    "finishedAt": podspec.now(),
                    "containerID": previous["containerID"],
                }
            },
        }
        return result

    deadline_exceeded: bool = False

    def _remaining(self, deadline: int | None) -> float | None:
        if deadline is None:
            return None
        return max(0.0, self.started_monotonic + deadline - time.monotonic())

    started_monotonic: float = 0.0

    def _run_with_restarts(
        self, container: dict[str, Any], spec: ContainerSpec, init: bool
    ) -> ExitStatus:
        policy = self.spec.get("restartPolicy", "Always")
        backoff = 1.0
        while True:
            result = self._run_container(container, spec, init)
            again = policy == "Always" or (policy == "OnFailure" and result.exit_code != 0)
            stopping = self.deleting.is_set() or self.agent.stop.is_set()
            if not again or stopping or self.deadline_exceeded:
                return result
            target = self.init_statuses if init else self.statuses
            target[container["name"]]["restartCount"] += 1
            self.deleting.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def run(self) -> None:
        threading.Thread(target=self._stop_on_deletion, daemon=True).start()
        try:
            self._run()
        except Exception as error:  # a worker must never take the agent down
            print(f"node: pod {self.namespace}/{self.name}: {error!r}", file=sys.stderr)
        finally:
            self.finished = True
            self._complete_deletion()

    def _run(self) -> None:
        # Logs of an earlier pod of the same name (its object is gone by now) are not ours.
        self.agent.logs.forget_pod(self.namespace, self.name)
        lost = self.pod.get("status", {}).get("startTime")
        if lost and self.spec.get("restartPolicy", "Always") == "Never":
            self._report_lost()
            return
        self.start_time = podspec.now()
        self.started_monotonic = time.monotonic()
        self._set_waiting(
            "PodInitializing" if self.spec.get("initContainers") else "ContainerCreating"
        )
        self._set_waiting("ContainerCreating", init=True)
        self._publish("Pending", initialized=not self.spec.get("initContainers"))
        if not self._wait_for_images():
            return
        volumes = self._prepare_volumes()
        if volumes is None:
            return
        try:
            init_specs = [
                (c, self._container_spec(c, volumes)) for c in self.spec.get("initContainers") or []
            ]
            main_specs = [(c, self._container_spec(c, volumes)) for c in self.spec["containers"]]
        except PodConfigError as error:
            self._set_waiting("CreateContainerConfigError", str(error))
            self._publish("Pending", initialized=False)
            return
        for container, spec in init_specs:
            if self.deleting.is_set():
                return
            result = self._run_with_restarts(container, spec, init=True)
            if result.exit_code != 0:
                self._set_waiting("PodInitializing")
                self._publish("Failed", initialized=False)
                return
        if self.deleting.is_set():
            return
        threads = [
            threading.Thread(target=self._run_with_restarts, args=(c, s, False), daemon=True)
            for c, s in main_specs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.deadline_exceeded:
            self._publish(
                "Failed",
                reason="DeadlineExceeded",
                message="Pod was active on the node longer than the specified deadline",
            )
            return
        codes = [s["state"]["terminated"]["exitCode"] for s in self.statuses.values()]
        self._publish("Succeeded" if all(c == 0 for c in codes) else "Failed")

    def _report_lost(self) -> None:
        """A pod an earlier agent started: its containers ended with that agent, so, as a
        kubelet does for containers it cannot find, they are reported terminated with
        ContainerStatusUnknown. Pods that may restart their containers run again (not relied on by
        any test: a rerun after a restart was seen to stall once)."""
        self.start_time = self.pod["status"]["startTime"]
        for container in self.spec["containers"]:
            self.statuses[container["name"]] = self._container_status(
                container,
                {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                        "startedAt": self.start_time,
                        "finishedAt": podspec.now(),
                    }
                },
            )
        self._publish("Failed")

    def _stop_on_deletion(self) -> None:
        """SIGTERM to every container once the pod is being deleted, SIGKILL after the grace
        period; containers that start meanwhile get the same treatment."""
        self.deleting.wait()
        grace = float(self.pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        deadline = time.monotonic() + grace
        signalled: set[int] = set()
        while not self.finished:
            with self.lock:
                running = list(self.containers.values())
            past_deadline = time.monotonic() >= deadline
            for container in running:
                if past_deadline:
                    container.kill()
                elif id(container) not in signalled:
                    signalled.add(id(container))
                    container.signal(signal.SIGTERM)
            time.sleep(0.1)

    def _complete_deletion(self) -> None:
        """Keeps logs until the pod object goes; completes a graceful deletion once stopped."""
        self.deleting.wait()
        if not self.gone.is_set():
            self._delete_this_incarnation()
        self.gone.wait(30)
        successors = [
            w
            for w in list(self.agent.workers.values())
            if w is not self and (w.namespace, w.name) == (self.namespace, self.name)
        ]
        if not successors:  # a new pod of the same name keeps its own logs
            self.agent.logs.forget_pod(self.namespace, self.name)
        shutil.rmtree(self.root, ignore_errors=True)

    def _delete_this_incarnation(self) -> None:
        """DELETE with grace 0 and a uid precondition, as the kubelet does: by then a new pod
        may carry the same name. lightkube's delete() takes no body, so its request builder is
        used directly."""
        generic = self.agent.client._client
        request = generic.prepare_request(
            "delete", Pod, name=self.name, namespace=self.namespace, params={}
        )
        request.data = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        with contextlib.suppress(httpx2.HTTPError):
            generic.send(generic.build_adapter_request(request)).close()


class NodeAgent:
    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        name: str = "testbed-node",
        images: dict[str, Path] | None = None,
        unavailable_images: set[str] | None = None,
    ) -> None:
        config = KubeConfig.from_file(kubeconfig)
        self.client = Client(config, field_manager="testbed-node")
        context = config.get()
        assert context is not None
        self.api_port = int(str(context.cluster.server).rsplit(":", 1)[1])
        self.workdir = workdir
        self.name = name
        self.images = images or {}
        self.unavailable_images = unavailable_images or set()
        self.logs = LogStore()
        self.workers: dict[str, PodWorker] = {}
        self.stop = threading.Event()
        pki = workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        # Without --kubelet-certificate-authority the API server does not verify this certificate.
        serving = trustme.CA().issue_cert("127.0.0.1")
        serving.cert_chain_pems[0].write_to_path(str(pki / "kubelet.crt"))
        serving.private_key_pem.write_to_path(str(pki / "kubelet.key"))
        self.log_server = LogServer(self.logs, pki / "kubelet.crt", pki / "kubelet.key")

    def _node_status(self) -> dict[str, Any]:
        stamp = podspec.now()
        conditions = [
            ("Ready", "True", "KubeletReady"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ]
        capacity = {"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        return {
            "conditions": [
                {
                    "type": kind,
                    "status": value,
                    "reason": reason,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for kind, value, reason in conditions
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_server.port}},
            "capacity": capacity,
            "allocatable": capacity,
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "k8scc testbed",
                "containerRuntimeVersion": "testbed://0",
                "kubeletVersion": "v0.0.0-testbed",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def _register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": NODE_LABELS},
            "status": self._node_status(),
        }
        try:
            self.client.create(load(Node, node))
        except ApiError as error:
            if error.status.code != 409:
                raise
            self.client.patch(Node.Status, self.name, {"status": self._node_status()})

    def _heartbeat(self) -> None:
        while not self.stop.wait(10):
            with contextlib.suppress(ApiError, httpx2.HTTPError):
                self.client.patch(Node.Status, self.name, {"status": self._node_status()})
                self._renew_lease()

    def _renew_lease(self) -> None:
        # A dict patch keeps the MicroTime precision the typed model would drop on create.
        renew = {"spec": {"renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())}}
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40},
        }
        try:
            self.client.create(load(Lease, lease))
        except ApiError as error:
            if error.status.code != 409:
                raise
        self.client.patch(Lease, self.name, renew, namespace="kube-node-lease")

    def _bind_loop(self) -> None:
        labels = {**NODE_LABELS, "kubernetes.io/hostname": self.name}
        for kind, pod in _watch(self.client, self.stop, fields={"spec.nodeName": ""}):
            spec, meta = pod["spec"], pod["metadata"]
            if kind == "DELETED" or meta.get("deletionTimestamp") or spec.get("schedulingGates"):
                continue
            if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                continue
            if not podspec.node_matches(spec, labels):
                self._unschedulable(pod)
                continue
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
            }
            # The API answers a Binding with a Status, which the typed model cannot decode.
            with contextlib.suppress(ApiError, httpx2.HTTPError, msgspec.ValidationError):
                self.client.create(
                    load(Pod.Binding, binding), meta["name"], namespace=meta["namespace"]
                )

    def _unschedulable(self, pod: dict[str, Any]) -> None:
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: "
            "1 node(s) didn't match Pod's node affinity/selector.",
            "lastTransitionTime": podspec.now(),
        }
        existing = [
            c for c in pod.get("status", {}).get("conditions") or [] if c["type"] == "PodScheduled"
        ]
        if existing and existing[0].get("reason") == "Unschedulable":
            return
        with contextlib.suppress(ApiError, httpx2.HTTPError):
            self.client.patch(
                Pod.Status,
                pod["metadata"]["name"],
                {"status": {"conditions": [condition]}},
                namespace=pod["metadata"]["namespace"],
            )

    def _pod_loop(self) -> None:
        for kind, pod in _watch(self.client, self.stop, fields={"spec.nodeName": self.name}):
            uid = pod["metadata"]["uid"]
            worker = self.workers.get(uid)
            if worker is None and kind != "DELETED":
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                threading.Thread(target=worker.run, daemon=True).start()
            if worker is None:
                continue
            worker.pod["metadata"] = pod["metadata"]
            if kind == "DELETED":
                worker.gone.set()
                worker.deleting.set()
                self.workers.pop(uid, None)
            elif pod["metadata"].get("deletionTimestamp"):
                worker.deleting.set()

    def run(self) -> None:
        self.log_server.start()
        self._register()
        self._renew_lease()
        loops = [self._heartbeat, self._bind_loop, self._pod_loop]
        threads = [threading.Thread(target=loop, daemon=True) for loop in loops]
        for thread in threads:
            thread.start()
        print("ready", flush=True)
        self.stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        """Ends every container this agent started; pods keep their last status."""
        for worker in list(self.workers.values()):
            with worker.lock:
                running = list(worker.containers.values())
            for container in running:
                container.kill()
            for container in running:
                # The pod's own worker may be closing it at the same moment.
                with contextlib.suppress(Exception):
                    container.close()
        self.log_server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="testbed.node")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--name", default="testbed-node")
    parser.add_argument("--image", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--unavailable-image", action="append", default=[], metavar="NAME")
    args = parser.parse_args(argv)
    images = {}
    for entry in args.image:
        name, _, directory = entry.partition("=")
        images[name] = Path(directory)
    agent = NodeAgent(args.kubeconfig, args.workdir, args.name, images, set(args.unavailable_image))
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop.set())
    agent.run()


if __name__ == "__main__":
    main()
