"""The whole test bed: a control plane plus a node, either the test bed's own node agent in a
process of its own or a real kubelet with containerd (testbed.realnode), chosen by `node` or
by K8SCC_TESTBED_NODE=agent|kubelet."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from testbed import buildah, fabric_images, oci, realnode
from testbed.controlplane import ControlPlane
from testbed.realnode import RealNode

IMAGES_DIR = Path(__file__).resolve().parent / "images"
# Images a test can use to see what a node does when a pull fails.
UNAVAILABLE_IMAGES = frozenset({"registry.invalid/k8scc/missing:1.0"})
# A shell and core utilities, for tests that need a container of their own on the real node.
BUSYBOX_IMAGE = "localhost/k8scc/busybox:1.0"
# Busybox whose ENTRYPOINT must run before the container's command, as in fabric-javaenv.
ENTRYPOINT_IMAGE = "localhost/k8scc/entrypoint:1.0"
NODE_KINDS = ("agent", "kubelet")
# The recipe k8scc ships for Java under PodSecurity `restricted`, built from the javaenv image.
NONROOT_JAVAENV_RECIPE = Path(__file__).resolve().parent.parent / "images" / "javaenv-nonroot"
NONROOT_JAVAENV_IMAGE = "localhost/k8scc/javaenv-nonroot:2.5"


def default_node() -> str:
    kind = os.environ.get("K8SCC_TESTBED_NODE", "agent")
    if kind not in NODE_KINDS:
        raise ValueError(f"K8SCC_TESTBED_NODE={kind!r}: expected one of {', '.join(NODE_KINDS)}")
    return kind


def default_images() -> dict[str, Path]:
    """Image name -> overlay directory; other images run on the host userland as they are."""
    overlays = {}
    for overlay in sorted(IMAGES_DIR.iterdir()) if IMAGES_DIR.is_dir() else []:
        for tag in ("2.5", "3.1", "latest"):
            overlays[f"hyperledger/fabric-{overlay.name}:{tag}"] = overlay
            overlays[f"docker.io/hyperledger/fabric-{overlay.name}:{tag}"] = overlay
    return overlays


@dataclass
class Testbed:
    __test__ = False  # not a pytest test class, despite the name
    workdir: Path
    images: dict[str, Path] = field(default_factory=default_images)
    node: str = field(default_factory=default_node)
    control_plane: ControlPlane = field(init=False)
    real_node: RealNode | None = field(init=False, default=None)
    _agent: subprocess.Popen[bytes] | None = None
    _agent_log: IO[bytes] | None = None

    def __post_init__(self) -> None:
        real = self.node == "kubelet"
        self.control_plane = ControlPlane(self.workdir / "control-plane", real_node=real)
        if real:
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
            self.real_node = RealNode(
                self.workdir / "node",
                self.control_plane,
                images,
                aliases,
                archives={oci.reference(NONROOT_JAVAENV_IMAGE): nonroot},
            )

    def start(self) -> None:
        self.control_plane.start()
        try:
            if self.real_node is not None:
                self.real_node.start()
            else:
                self.start_agent()
        except BaseException:
            self.control_plane.stop()
            raise

    def start_agent(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "testbed.node",
            "--kubeconfig",
            str(self.control_plane.admin_kubeconfig),
            "--workdir",
            str(self.workdir / "node"),
        ]
        for name, directory in self.images.items():
            argv += ["--image", f"{name}={directory}"]
        for name in sorted(UNAVAILABLE_IMAGES):
            argv += ["--unavailable-image", name]
        self._agent_log = (self.workdir / "node.log").open("ab")
        self._agent = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._agent_log,
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,
        )
        assert self._agent.stdout is not None
        line = self._agent.stdout.readline()
        if line.strip() != b"ready":
            self.stop_agent()
            raise RuntimeError(f"node agent did not start; see {self.workdir / 'node.log'}")

    def stop_agent(self) -> None:
        """SIGTERM lets the agent end its containers; SIGKILL of its group is the fallback."""
        if self._agent is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._agent.pid, signal.SIGTERM)
        try:
            self._agent.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._agent.pid, signal.SIGKILL)
            self._agent.wait()
        if self._agent.stdout:
            self._agent.stdout.close()
        if self._agent_log:
            self._agent_log.close()
        self._agent = None

    @property
    def host_address(self) -> str:
        """Where pods reach processes of the host (a peer, say): the real node's pods have a
        network namespace of their own, the agent's share the host's."""
        return realnode.NODE_IP if self.real_node is not None else "127.0.0.1"

    @property
    def egress_proxy(self) -> str | None:
        """The HTTPS proxy builds download through, when pods have no other way out."""
        if self.real_node is None or self.real_node.egress is None:
            return None
        return self.real_node.egress.url

    @property
    def agent_pid(self) -> int:
        assert self._agent is not None, "the node agent is not running"
        return self._agent.pid

    def restart_agent(self) -> None:
        """As a node's kubelet restarting, except that containers end with it: pods it had
        started are reported lost by the next agent (see PodWorker._report_lost)."""
        self.stop_agent()
        self.start_agent()

    def stop(self) -> None:
        try:
            if self.real_node is not None:
                self.real_node.stop()
            self.stop_agent()
        finally:
            self.control_plane.stop()

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
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
