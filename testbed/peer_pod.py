"""A Fabric peer in a pod of the real node, deployed as an operator would: deploy/base and
deploy/chaincode through an overlay of its own (the peer's namespace and a chaincode namespace,
the peer image's release tag, k8scc's configuration), applied server-side with kubectl, and the
identity Secret made from the network's crypto material as docs/install.md shows. The peer acts
as its pod's ServiceAccount (in-cluster credentials), k8scc moves files through the API (no
shared volume) into pods of the chaincode namespace, and chaincode reaches the peer at its pod
address by DNS name.

The test bed has no kube-proxy, so the Service address of the API server routes nowhere; the
overlay points KUBERNETES_SERVICE_HOST/PORT at the node's relay to it (testbed.relay), which is
all a kube-proxy would do for it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from lightkube import ApiError
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Namespace, Pod

from testbed import binaries, fabric, peer_image, realnode

if TYPE_CHECKING:
    from testbed.cluster import Testbed

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
POD = "fabric-peer-0"
SERVICE = "fabric-peer"
PEER_PORT = 7051


def chaincode_namespace(testbed: Testbed, peer_namespace: str) -> str:
    """The namespace of k8scc's pods beside the peer's, created with its PodSecurity level."""
    name = f"{peer_namespace[:50]}-cc"
    client = testbed.control_plane.client()
    try:
        labels = client.get(Namespace, peer_namespace).metadata.labels or {}  # type: ignore[union-attr]
    finally:
        client.close()
    testbed.control_plane.create_namespace(name, labels["pod-security.kubernetes.io/enforce"])
    return name


class PeerPod:
    tls_names: tuple[str, ...] = (f"{POD}.{SERVICE}", "localhost")

    def __init__(
        self,
        testbed: Testbed,
        namespace: str,
        chaincode_namespace: str,
        workdir: Path,
        k8scc: dict[str, Any],
    ) -> None:
        """`k8scc`: settings added to the overlay's k8scc.yaml."""
        self.testbed = testbed
        self.namespace = namespace
        self.chaincode_namespace = chaincode_namespace
        self.workdir = workdir
        self.k8scc = k8scc
        self.overlay = workdir / "overlay"

    def start(self, network: fabric.FabricNetwork, timeout: float) -> str:
        ledger = self.workdir / "volumes" / "ledger"
        ledger.mkdir(parents=True)
        # A hostPath volume takes no fsGroup: writable by the peer's user.
        ledger.chmod(0o777)
        self.testbed.control_plane.create_local_volume(
            self.namespace, f"ledger-{POD}", ledger, "10Gi"
        )
        self._create_identity(network)
        self._write_overlay(network)
        self._kubectl("apply", "--server-side", "-k", str(self.overlay))
        address = self._wait_serving(timeout)
        return f"{address}:{PEER_PORT}"

    def _create_identity(self, network: fabric.FabricNetwork) -> None:
        node = network.peer_node_dir
        msp = node / "msp"
        config = self.workdir / "msp-config.yaml"
        text = (msp / "config.yaml").read_text()
        config.write_text(
            "\n".join(
                line.split("cacerts/")[0] + "cacerts/ca.pem" if "cacerts/" in line else line
                for line in text.splitlines()
            )
        )
        [cacert] = (msp / "cacerts").iterdir()
        [tlscacert] = (msp / "tlscacerts").iterdir()
        [signcert] = (msp / "signcerts").iterdir()
        [key] = (msp / "keystore").iterdir()
        files = {
            "msp-config.yaml": config,
            "msp-cacert.pem": cacert,
            "msp-tlscacert.pem": tlscacert,
            "msp-signcert.pem": signcert,
            "msp-key.pem": key,
            "tls-server.crt": node / "tls" / "server.crt",
            "tls-server.key": node / "tls" / "server.key",
            "tls-ca.crt": node / "tls" / "ca.crt",
        }
        self._kubectl(
            "create",
            "secret",
            "generic",
            "fabric-peer-crypto",
            "-n",
            self.namespace,
            *(f"--from-file={key}={path}" for key, path in files.items()),
        )

    def _write_overlay(self, network: fabric.FabricNetwork) -> None:
        """Like deploy/overlays/example: the top directory names the two, peer/ and
        chaincode/ each set their namespace."""
        peer, chaincode = self.overlay / "peer", self.overlay / "chaincode"
        peer.mkdir(parents=True)
        chaincode.mkdir()
        relay = self.testbed.real_node.api_relay
        assert relay is not None, "the node is not running"
        settings = {
            "fabricVersion": network.version,
            "namespace": self.chaincode_namespace,
            "transfer": {"mode": "api"},
            **self.k8scc,
        }
        (peer / "k8scc.yaml").write_text(yaml.safe_dump(settings))
        env = {
            "KUBERNETES_SERVICE_HOST": realnode.NODE_IP,
            "KUBERNETES_SERVICE_PORT": str(relay.port),
            "CORE_PEER_TLS_ENABLED": "true" if network.peer_tls else "false",
            "FABRIC_LOGGING_FORMAT": fabric.LOG_FORMAT,
            "FABRIC_LOGGING_SPEC": fabric.LOG_SPEC,
        }
        patch = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": SERVICE},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "peer",
                                "env": [{"name": k, "value": v} for k, v in env.items()],
                            }
                        ]
                    }
                }
            },
        }
        _, _, image_tag = peer_image.tag(network.version).partition(":")
        kustomize(
            peer,
            namespace=self.namespace,
            resources=[os.path.relpath(DEPLOY / "base", peer)],
            images=[{"name": peer_image.REPOSITORY, "newTag": image_tag}],
            configMapGenerator=[
                {"name": "k8scc-config", "behavior": "replace", "files": ["k8scc.yaml"]}
            ],
            patches=[{"patch": yaml.safe_dump(patch)}],
        )

        # deploy/chaincode names the example's peer namespace twice.
        def peer_namespace(kind: str, name: str, path: str) -> dict[str, Any]:
            operation = {"op": "replace", "path": path, "value": self.namespace}
            return {"target": {"kind": kind, "name": name}, "patch": yaml.safe_dump([operation])}

        selector = "/spec/egress/0/to/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name"
        kustomize(
            chaincode,
            namespace=self.chaincode_namespace,
            resources=[os.path.relpath(DEPLOY / "chaincode", chaincode)],
            patches=[
                peer_namespace("RoleBinding", "k8scc", "/subjects/0/namespace"),
                peer_namespace("NetworkPolicy", "k8scc-chaincode", selector),
            ],
        )
        kustomize(self.overlay, resources=["peer", "chaincode"])

    def _wait_serving(self, timeout: float) -> str:
        """The pod's address, once the peer accepts connections there."""
        client = self.testbed.control_plane.client()
        deadline = time.monotonic() + timeout
        try:
            while True:
                with contextlib.suppress(ApiError):
                    pod = client.get(Pod, POD, namespace=self.namespace)
                    address = pod.status.podIP if pod.status else None
                    if address and pod.status and pod.status.phase == "Running":
                        with (
                            contextlib.suppress(OSError),
                            socket.create_connection((address, PEER_PORT), 1),
                        ):
                            return address
                if time.monotonic() > deadline:
                    raise TimeoutError(f"peer pod not serving after {timeout} s:\n{self.log()}")
                time.sleep(0.5)
        finally:
            client.close()

    def log(self) -> str:
        client = self.testbed.control_plane.client()
        try:
            lines = client.log(POD, namespace=self.namespace, container="peer")
            return "".join(lines)
        except ApiError:
            return ""
        finally:
            client.close()

    def stop(self) -> None:
        """Deletes the StatefulSet and waits for its pod (and, by owner, k8scc's) to go."""
        client = self.testbed.control_plane.client()
        try:
            with contextlib.suppress(ApiError):
                client.delete(StatefulSet, SERVICE, namespace=self.namespace)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    client.get(Pod, POD, namespace=self.namespace)
                except ApiError:
                    return
                time.sleep(0.5)
        finally:
            client.close()

    def _kubectl(self, *args: str) -> str:
        command = [
            str(binaries.ensure(binaries.KUBECTL) / "kubectl"),
            f"--kubeconfig={self.testbed.control_plane.admin_kubeconfig}",
            *args,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result.stdout


def kustomize(directory: Path, **fields: Any) -> None:
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({**kustomization, **fields}))


def pod_network(testbed: Testbed, namespace: str, workdir: Path) -> fabric.FabricNetwork:
    """A Fabric 3.1 network (not started yet) whose peer runs in a pod of `namespace` and
    k8scc's pods in its chaincode namespace, with k8scc's timeouts short enough for tests and
    builds downloading through the node's proxy."""
    pods = chaincode_namespace(testbed, namespace)
    settings: dict[str, Any] = {
        "timeouts": {"stuck": "10s", "start": "120s"},
        **testbed.build_settings(pods),
    }
    return fabric.FabricNetwork(
        workdir / "fabric",
        "3.1",
        builders=[],
        chaincode_host=testbed.host_address,
        peer_launcher=PeerPod(testbed, namespace, pods, workdir / "peer", settings),
    )
