"""etcd, kube-apiserver and kube-controller-manager as local processes on free loopback ports.

The control plane gets a fresh CA per start: x509 client certificates authenticate, RBAC
authorizes, PodSecurity admits, and the API server issues ServiceAccount tokens itself.
kube-controller-manager runs the controllers that need no cloud or real nodes (garbage
collection, namespace deletion, ServiceAccounts, kube-root-ca.crt, PV binding), so ownership
and cascading deletion behave as on a real cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trustme
import yaml
from lightkube import ApiError, Client, KubeConfig
from lightkube.core.decoders import decode_object
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import (
    ConfigMap,
    Namespace,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    ServiceAccount,
    ServiceAccountToken,
)
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from testbed import binaries
from testbed.health import wait_http_ok
from testbed.objects import load

SERVICE_CIDR = "10.0.0.0/24"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubeconfig(server: str, ca_file: Path, user: dict[str, str], namespace: str = "default") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {"server": server, "certificate-authority": str(ca_file)},
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {
                    "name": "testbed",
                    "context": {"cluster": "testbed", "user": "user", "namespace": namespace},
                }
            ],
            "current-context": "testbed",
        }
    )


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class ControlPlane:
    """A running control plane rooted at `workdir` (certificates, etcd data, logs)."""

    workdir: Path
    with_controller_manager: bool = True
    # A real kubelet needs the node lifecycle controller (it lifts the not-ready taint) and a
    # scheduler; a control plane alone (tests of the API server's own behaviour) needs neither.
    real_node: bool = False
    # Every request's metadata in audit.log (benchmarks count k8scc's API load from it).
    audit: bool = False
    # Further addresses the API server's certificate is valid for (where pods reach it).
    api_addresses: tuple[str, ...] = ()
    api_port: int = 0
    _restarts: int = 0
    _etcd_url: str = ""
    _ca: trustme.CA | None = None
    _processes: list[_Process] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def start(self, timeout: float = 60.0) -> None:
        etcd_dir = binaries.ensure(binaries.ETCD)
        kube_dir = binaries.ensure(binaries.KUBE)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        try:
            self._etcd_url = self._start_etcd(etcd_dir / "etcd", timeout)
            self._start_apiserver(kube_dir / "kube-apiserver", self._etcd_url, timeout)
            if self.with_controller_manager:
                self._start_controller_manager(kube_dir / "kube-controller-manager", timeout)
            if self.real_node:
                scheduler = binaries.ensure(binaries.NODE) / "kube-scheduler"
                self._start_scheduler(scheduler, timeout)
        except BaseException:
            self.stop()
            raise

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        ca = self._ca = trustme.CA(organization_name="k8scc testbed")
        ca.cert_pem.write_to_path(str(self.ca_file))
        ca.private_key_pem.write_to_path(str(pki / "ca.key"))
        serving = ca.issue_cert(
            "127.0.0.1",
            "localhost",
            "10.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            *self.api_addresses,
            common_name="kube-apiserver",
        )
        serving.cert_chain_pems[0].write_to_path(str(pki / "apiserver.crt"))
        serving.private_key_pem.write_to_path(str(pki / "apiserver.key"))
        self.issue_client_cert(pki / "admin", "admin", "system:masters")
        # What the API server presents to kubelets for pods/log, exec and attach.
        self.issue_client_cert(
            pki / "kubelet-client", "kube-apiserver-kubelet-client", "system:masters"
        )
        # Any private key signs ServiceAccount tokens; the API server verifies with the same file.
        signer = ca.issue_cert("service-account-signer")
        signer.private_key_pem.write_to_path(str(pki / "sa.key"))
        self.api_port = free_port()
        self.admin_kubeconfig.write_text(
            kubeconfig(
                self.server,
                self.ca_file,
                {
                    "client-certificate": str(pki / "admin.crt"),
                    "client-key": str(pki / "admin.key"),
                },
            )
        )

    def issue_client_cert(self, stem: Path, common_name: str, organization: str) -> Path:
        """`stem`.crt and `stem`.key, a client certificate of this control plane's CA."""
        assert self._ca is not None, "the control plane has no CA before start()"
        # The subject names the user; the SAN (required, and no place for `system:` names) is
        # the file's stem.
        issued = self._ca.issue_cert(
            stem.name, common_name=common_name, organization_name=organization
        )
        issued.cert_chain_pems[0].write_to_path(str(stem.with_suffix(".crt")))
        issued.private_key_pem.write_to_path(str(stem.with_suffix(".key")))
        return stem

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        log = (self.workdir / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = _Process(name, popen, log)
        self._processes.append(process)
        return process

    def _wait_http(
        self, process: _Process, url: str, context: ssl.SSLContext | None, timeout: float
    ) -> None:
        def check_alive() -> None:
            if process.popen.poll() is not None:
                raise RuntimeError(
                    f"{process.name} exited with {process.popen.returncode}; see "
                    f"{self.workdir / (process.name + '.log')}"
                )

        wait_http_ok(process.name, url, timeout, check_alive, context)

    def _start_etcd(self, binary: Path, timeout: float) -> str:
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        process = self._spawn(
            "etcd",
            [
                str(binary),
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                client_url,
                "--advertise-client-urls",
                client_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self._wait_http(process, f"{client_url}/health", None, timeout)
        return client_url

    def admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        pki = self.workdir / "pki"
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def _start_apiserver(self, binary: Path, etcd_url: str, timeout: float) -> None:
        pki = self.workdir / "pki"
        process = self._spawn(
            "kube-apiserver",
            [
                str(binary),
                f"--etcd-servers={etcd_url}",
                f"--secure-port={self.api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki / 'sa.key'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                "--profiling=false",
                *self._audit_flags(),
            ],
        )
        self._wait_http(process, f"{self.server}/readyz", self.admin_ssl_context(), timeout)

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.workdir / "audit-policy.yaml"
        rules = [{"level": "Metadata"}]
        policy.write_text(
            yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules})
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
        ]

    def _start_controller_manager(self, binary: Path, timeout: float) -> None:
        pki = self.workdir / "pki"
        port = free_port()
        process = self._spawn(
            "kube-controller-manager",
            [
                str(binary),
                f"--kubeconfig={self.admin_kubeconfig}",
                "--leader-elect=false",
                f"--controllers={','.join(self._controllers())}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
            ],
        )
        self._wait_healthz(process, port, timeout)

    def _controllers(self) -> list[str]:
        # IPAM and routes assume a cloud's pod network; node lifecycle assumes real kubelets.
        off = [
            "node-ipam-controller",
            "cloud-node-lifecycle-controller",
            "service-lb-controller",
            "node-route-controller",
            "persistentvolume-attach-detach-controller",
        ]
        if not self.real_node:
            off.append("node-lifecycle-controller")
        return ["*", *(f"-{name}" for name in off)]

    def _start_scheduler(self, binary: Path, timeout: float) -> None:
        port = free_port()
        process = self._spawn(
            "kube-scheduler",
            [
                str(binary),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--authentication-kubeconfig={self.admin_kubeconfig}",
                f"--authorization-kubeconfig={self.admin_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
            ],
        )
        self._wait_healthz(process, port, timeout)

    def _wait_healthz(self, process: _Process, port: int, timeout: float) -> None:
        # Its serving certificate is self-signed; /healthz only tells that it runs.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._wait_http(process, f"https://127.0.0.1:{port}/healthz", insecure, timeout)

    @staticmethod
    def _end(process: _Process, timeout: float, first: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, first)
        try:
            process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait()
        process.log.close()

    def restart_apiserver(
        self, down_seconds: float = 2.0, timeout: float = 60.0, stop: int = signal.SIGTERM
    ) -> None:
        """Stops kube-apiserver (SIGKILL for `stop` makes it a crash: its streams break at
        once), leaves it down a while, and starts it on the same port."""
        [apiserver] = [p for p in self._processes if p.name == "kube-apiserver"]
        self._end(apiserver, timeout=10.0, first=stop)
        self._processes.remove(apiserver)
        time.sleep(down_seconds)
        binary = binaries.ensure(binaries.KUBE) / "kube-apiserver"
        self._start_apiserver(binary, self._etcd_url, timeout)
        self._restarts += 1
        if self.real_node:
            self._restart_scheduler(timeout)
            self._wait_node_current(2 * timeout)

    def _restart_scheduler(self, timeout: float) -> None:
        """The scheduler's watches come back from an outage with an exponential, jittered
        backoff that grows over restarts close together (past a minute, seen here), and until
        then it calls newer claims not found: tests after a restart would wait on it. A fresh
        scheduler lists everything at once."""
        [scheduler] = [p for p in self._processes if p.name == "kube-scheduler"]
        self._end(scheduler, timeout=10.0)
        self._processes.remove(scheduler)
        self._start_scheduler(binaries.ensure(binaries.NODE) / "kube-scheduler", timeout)

    def _wait_node_current(self, timeout: float) -> None:
        """Waits until a pod on a claim made after the restart is placed and its kubelet
        reports on it: both the scheduler and the kubelet see new objects again."""
        namespace = f"testbed-restart-{self._restarts}"
        self.create_namespace(namespace, enforce="privileged")
        directory = self.workdir / namespace
        directory.mkdir()
        self.create_local_volume(namespace, "probe", directory)
        probe = {
            "metadata": {"name": "probe"},
            "spec": {
                "containers": [{"name": "probe", "image": "k8scc.invalid/probe:1"}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "probe"}}],
            },
        }
        client = self.client()
        try:
            client.create(load(Pod, probe), namespace=namespace)
            deadline = time.monotonic() + timeout
            while not _reported_by_kubelet(client.get(Pod, "probe", namespace=namespace)):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        "the scheduler or kubelet did not catch up after the restart"
                    )
                time.sleep(0.5)
            client.delete(Pod, "probe", namespace=namespace, grace_period=0)
        finally:
            client.close()

    @contextlib.contextmanager
    def apiserver_hung(self) -> Iterator[None]:
        """kube-apiserver stopped (SIGSTOP) while the block runs: connections are accepted by
        the kernel and never answered, as by a server that hangs."""
        [apiserver] = [p for p in self._processes if p.name == "kube-apiserver"]
        os.killpg(apiserver.popen.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(apiserver.popen.pid, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """Ends only the processes this control plane started, newest first."""
        for process in reversed(self._processes):
            self._end(process, timeout)
        self._processes.clear()

    # -- helpers for tests ----------------------------------------------------------------------

    def client(self) -> Client:
        _prime_pod_decoding()
        return Client(KubeConfig.from_file(self.admin_kubeconfig), field_manager="testbed")

    def create_namespace(self, name: str, enforce: str = "restricted") -> None:
        """A namespace enforcing a PodSecurity level, with what pods need from the controllers
        created at once (kube-controller-manager would add them, but asynchronously)."""
        client = self.client()
        labels = {
            "pod-security.kubernetes.io/enforce": enforce,
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        client.create(load(Namespace, {"metadata": {"name": name, "labels": labels}}))
        objects = [
            load(ServiceAccount, {"metadata": {"name": "default"}}),
            load(
                ConfigMap,
                {
                    "metadata": {"name": "kube-root-ca.crt"},
                    "data": {"ca.crt": self.ca_file.read_text()},
                },
            ),
        ]
        for obj in objects:
            try:
                client.create(obj, namespace=name)
            except ApiError as error:
                if error.status.code != 409:
                    raise
        client.close()

    def create_local_volume(
        self, namespace: str, claim: str, path: Path, size: str = "10Gi"
    ) -> None:
        """A PersistentVolume on a local directory and a claim, bound to each other here, as the
        controller-manager's binder would leave them: the volume names the claim by its uid
        (without it the binder calls the claim Lost, and a scheduler places no pod on it), and
        both say Bound. Waiting for the binder instead made tests depend on its resyncs."""
        client = self.client()
        volume_name = f"{namespace}-{claim}"
        created = client.create(
            load(
                PersistentVolumeClaim,
                {
                    "metadata": {
                        "name": claim,
                        "annotations": {"pv.kubernetes.io/bind-completed": "yes"},
                    },
                    "spec": {
                        "accessModes": ["ReadWriteMany"],
                        "storageClassName": "",
                        "volumeName": volume_name,
                        "resources": {"requests": {"storage": size}},
                    },
                },
            ),
            namespace=namespace,
        )
        assert created.metadata is not None
        client.create(
            load(
                PersistentVolume,
                {
                    "metadata": {"name": volume_name},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": ["ReadWriteMany"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "",
                        "hostPath": {"path": str(path), "type": "Directory"},
                        "claimRef": {
                            "kind": "PersistentVolumeClaim",
                            "namespace": namespace,
                            "name": claim,
                            "uid": created.metadata.uid,
                        },
                    },
                },
            )
        )
        client.patch(PersistentVolume.Status, volume_name, {"status": {"phase": "Bound"}})
        client.patch(
            PersistentVolumeClaim.Status,
            claim,
            {
                "status": {
                    "phase": "Bound",
                    "accessModes": ["ReadWriteMany"],
                    "capacity": {"storage": size},
                }
            },
            namespace=namespace,
        )
        client.close()

    def create_objects(self, namespace: str, documents: Iterable[Mapping[str, Any]]) -> None:
        """ServiceAccounts, Roles and RoleBindings from manifests, created in `namespace`."""
        kinds: dict[str, Any] = {
            "ServiceAccount": ServiceAccount,
            "Role": Role,
            "RoleBinding": RoleBinding,
        }
        client = self.client()
        for document in documents:
            client.create(load(kinds[document["kind"]], document), namespace=namespace)
        client.close()

    def token(self, namespace: str, account: str, seconds: int = 3600) -> str:
        client = self.client()
        issued = client.create(
            ServiceAccountToken(
                metadata=ObjectMeta(),
                spec=TokenRequestSpec(audiences=[], expirationSeconds=seconds),
            ),
            account,
            namespace=namespace,
        )
        client.close()
        assert issued.status is not None
        return str(issued.status.token)

    def serviceaccount_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount with a TokenRequest token."""
        token = self.token(namespace, account)
        path.write_text(kubeconfig(self.server, self.ca_file, {"token": token}, namespace))
        return path

    def write_incluster_dir(self, namespace: str, account: str, directory: Path) -> Path:
        """What a pod finds under /var/run/secrets/kubernetes.io/serviceaccount."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(self.token(namespace, account))
        (directory / "ca.crt").write_text(self.ca_file.read_text())
        (directory / "namespace").write_text(namespace)
        return directory

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _prime_pod_decoding() -> None:
    """Decodes one Pod in the calling thread. msgspec (0.22, under lightkube) builds a type's
    decoder on its first use, and two threads doing that at once crash the interpreter with a
    segmentation fault (8 threads decoding their first Pod: 19 crashes in 20 runs; none once
    one Pod was decoded first). Tests and benchmarks watch pods in threads of their own."""
    decode_object(b'{"metadata": {"name": "primed"}, "status": {"containerStatuses": []}}', Pod)


def _reported_by_kubelet(pod: Pod) -> bool:
    return bool(pod.spec and pod.spec.nodeName and pod.status and pod.status.containerStatuses)
