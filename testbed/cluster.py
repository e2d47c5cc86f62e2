"""The whole test bed: a control plane (etcd, kube-apiserver, controller-manager, scheduler)
and a real node (testbed.realnode: a kubelet, containerd and runc) with images that behave like
Fabric's (testbed.fabric_images), the peer image (testbed.peer_image) among them."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import buildah, fabric_images, oci, peer_image, realnode
from testbed.binaries import cache_root
from testbed.controlplane import ControlPlane
from testbed.realnode import RealNode

# Images a test can use to see what a node does when a pull fails.
UNAVAILABLE_IMAGES = frozenset({"registry.invalid/k8scc/missing:1.0"})
# A shell and core utilities, for tests that need a container of their own on the real node.
BUSYBOX_IMAGE = "localhost/k8scc/busybox:1.0"
# Busybox whose ENTRYPOINT must run before the container's command, as in fabric-javaenv.
ENTRYPOINT_IMAGE = "localhost/k8scc/entrypoint:1.0"
# The recipe k8scc ships for Java under PodSecurity `restricted`, built from the javaenv image.
NONROOT_JAVAENV_RECIPE = Path(__file__).resolve().parent.parent / "images" / "javaenv-nonroot"
NONROOT_JAVAENV_IMAGE = "localhost/k8scc/javaenv-nonroot:2.5"
# The claim of the build cache every test bed build shares (build_settings).
BUILD_CACHE_CLAIM = "k8scc-build-cache"
# Its directory, kept across runs as an operator's volume is; the number is its layout's version.
BUILD_CACHE_DIR = "build-cache-1"


@dataclass
class Testbed:
    __test__ = False  # not a pytest test class, despite the name
    workdir: Path
    control_plane: ControlPlane = field(init=False)
    real_node: RealNode = field(init=False)
    _cached_namespaces: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.control_plane = ControlPlane(
            self.workdir / "control-plane", real_node=True, api_addresses=(realnode.NODE_IP,)
        )
        fabric = fabric_images.fabric_images()
        images = (
            oci.busybox_image(BUSYBOX_IMAGE),
            oci.entrypoint_image(ENTRYPOINT_IMAGE),
            *(image for image, _ in fabric),
        )
        aliases = {image.name: names for image, names in fabric}
        [javaenv] = [image for image, _ in fabric if "javaenv" in image.name]
        nonroot = buildah.build(
            NONROOT_JAVAENV_RECIPE, NONROOT_JAVAENV_IMAGE, {"JAVAENV": oci.archive(javaenv)}
        )
        peer, peer_archive = peer_image.build("3.1")
        self.real_node = RealNode(
            self.workdir / "node",
            self.control_plane,
            images,
            aliases,
            archives={
                oci.reference(NONROOT_JAVAENV_IMAGE): nonroot,
                oci.reference(peer): peer_archive,
            },
        )

    def start(self) -> None:
        self.control_plane.start()
        try:
            self.real_node.start()
        except BaseException:
            self.control_plane.stop()
            raise

    @property
    def host_address(self) -> str:
        """Where pods reach processes of the host (a peer, say): the node's bridge address."""
        return realnode.NODE_IP

    @property
    def egress_proxy(self) -> str | None:
        """The HTTPS proxy builds download through: pods have no other way out."""
        return self.real_node.egress.url if self.real_node.egress is not None else None

    def build_settings(self, namespace: str) -> dict[str, Any]:
        """k8scc settings for builds in `namespace` as an operator's cluster would have them:
        downloads through the egress proxy, and a build cache. The cache's claim is made here,
        once per namespace, on one host directory that every namespace and run shares, so a
        chaincode built before builds warm; tests of cold builds name a claim of their own."""
        if namespace not in self._cached_namespaces:
            directory = cache_root() / BUILD_CACHE_DIR
            directory.mkdir(parents=True, exist_ok=True)
            # A hostPath volume takes no fsGroup: open to every builder user.
            directory.chmod(0o777)
            self.control_plane.create_local_volume(namespace, BUILD_CACHE_CLAIM, directory)
            self._cached_namespaces.add(namespace)
        settings: dict[str, Any] = {"buildCache": {"claimName": BUILD_CACHE_CLAIM}}
        if self.egress_proxy:
            settings["buildEnv"] = {"HTTPS_PROXY": self.egress_proxy}
        return settings

    def stop(self) -> None:
        try:
            self.real_node.stop()
        finally:
            self.control_plane.stop()

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    if sys.argv[1:] == ["--images"]:
        # `make test` builds them before pytest, so a cold build counts against no test's timeout.
        with tempfile.TemporaryDirectory(prefix="k8scc-testbed-") as unused:
            Testbed(Path(unused)).real_node.image_archives()
        return
    workdir = Path(tempfile.mkdtemp(prefix="k8scc-testbed-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        testbed = cleanup.enter_context(Testbed(workdir))
        kubeconfig = testbed.control_plane.admin_kubeconfig
        print(f"testbed: API server {testbed.control_plane.server}", file=sys.stderr)
        print(f"testbed: export KUBECONFIG={kubeconfig}", file=sys.stderr)
        print("testbed: Ctrl-C stops it", file=sys.stderr)
        # Blocked first, so the signal is waited for rather than delivered to a handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
