"""The test testbed's real node: a kubelet we built, containerd 2.x and runc, pods in network
namespaces of their own on our bridge, and a stop that leaves the host as it was."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod, Service

from k8scc import config, kubeconfig, render
from k8scc.kube import Incarnation, Kube
from k8scc.peer import Identity
from k8scc.platforms import PLATFORMS
from testbed import binaries, realnode
from testbed.cluster import BUSYBOX_IMAGE, ENTRYPOINT_IMAGE, Testbed
from testbed.objects import load
from tests.support.pods import phase_in, shell_pod, terminated, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


@pytest.fixture
def client(testbed: Testbed) -> Iterator[Client]:
    admin = testbed.control_plane.client()
    yield admin
    admin.close()


@pytest.fixture
def ns(testbed: Testbed, request: pytest.FixtureRequest) -> str:
    name = f"rn-{request.node.name.replace('_', '-')}"[:63].rstrip("-").lower()
    testbed.control_plane.create_namespace(name)
    return name


def kubectl(testbed: Testbed, *args: str) -> subprocess.CompletedProcess[str]:
    binary = binaries.ensure(binaries.KUBECTL) / "kubectl"
    return subprocess.run(
        [str(binary), f"--kubeconfig={testbed.control_plane.admin_kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def busybox_pod(name: str, script: str) -> Pod:
    return shell_pod(
        name,
        script,
        container={"image": BUSYBOX_IMAGE, "imagePullPolicy": "Never"},
        securityContext={"runAsUser": 500, "runAsGroup": 500},
    )


def test_node_is_ready_with_our_kubelet_and_containerd(testbed: Testbed) -> None:
    shown = kubectl(testbed, "get", "nodes", "-o", "wide", "--no-headers")
    assert shown.returncode == 0, shown.stderr
    [row] = shown.stdout.splitlines()
    columns = row.split()
    assert columns[:2] == [testbed.real_node.name, "Ready"]
    assert f"v{binaries.KUBE_VERSION}" in columns
    assert f"containerd://{binaries.CONTAINERD.version}" in columns
    assert realnode.NODE_IP in columns


def test_restricted_pod_runs_in_its_own_network_namespace(
    testbed: Testbed, client: Client, ns: str
) -> None:
    client.create(busybox_pod("probe", "echo ready; exec sleep 1000"), namespace=ns)
    running = wait_for(client, "probe", ns, phase_in("Running"))
    address = ipaddress.ip_address(running["status"]["podIP"])
    assert address in ipaddress.ip_network(realnode.SUBNET)
    assert address != ipaddress.ip_address(realnode.NODE_IP)
    status = kubectl(testbed, "exec", "-n", ns, "probe", "--", "cat", "/proc/self/status")
    assert status.returncode == 0, status.stderr
    fields = dict(line.split(":\t", 1) for line in status.stdout.splitlines() if ":\t" in line)
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    assert fields["Uid"].split()[0] == "500"
    links = kubectl(testbed, "exec", "-n", ns, "probe", "--", "cat", "/proc/net/dev")
    assert "eth0" in links.stdout and realnode.BRIDGE not in links.stdout
    assert list(client.log("probe", namespace=ns, newlines=False)) == ["ready"]


def test_headless_services_resolve_in_pods_through_the_cluster_dns(client: Client, ns: str) -> None:
    server = busybox_pod("peer-0", "exec sleep 1000")
    assert server.metadata is not None
    server.metadata.labels = {"app": "peer"}
    client.create(server, namespace=ns)
    address = wait_for(client, "peer-0", ns, phase_in("Running"))["status"]["podIP"]
    headless = {"clusterIP": "None", "selector": {"app": "peer"}, "ports": [{"port": 7052}]}
    client.create(load(Service, {"metadata": {"name": "peer"}, "spec": headless}), namespace=ns)
    name = f"peer.{ns}.svc.{realnode.CLUSTER_DOMAIN}"
    # The endpoints reach CoreDNS a moment after the Service: ask until they have.
    script = f"for i in $(seq 60); do nslookup {name} && exit 0; sleep 0.5; done; exit 1"
    client.create(busybox_pod("asker", script), namespace=ns)
    state = terminated(wait_for(client, "asker", ns, phase_in("Succeeded", "Failed"), 60))
    answer = "\n".join(client.log("asker", namespace=ns, newlines=False))
    assert state["exitCode"] == 0, answer
    assert f"Address: {address}" in answer


def test_graceful_delete_waits_for_the_container_to_exit(client: Client, ns: str) -> None:
    script = "trap 'sleep 2; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    client.create(busybox_pod("graceful", script), namespace=ns)
    wait_for(client, "graceful", ns, phase_in("Running"))
    started = time.monotonic()
    client.delete(Pod, "graceful", namespace=ns)
    assert client.get(Pod, "graceful", namespace=ns).metadata.deletionTimestamp  # type: ignore[union-attr]
    while time.monotonic() - started < 30:
        try:
            client.get(Pod, "graceful", namespace=ns)
        except ApiError as error:
            assert error.status.code == 404
            break
        time.sleep(0.1)
    # The object stayed while the container ran its TERM handler (2 s).
    assert time.monotonic() - started >= 2


def running_with(marker: str) -> list[int]:
    """Host processes with `marker` in an argument: a container's, seen from outside."""
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def test_k8scc_reuses_a_pod_name_only_once_the_old_container_has_stopped(
    testbed: Testbed, client: Client, ns: str
) -> None:
    """A relaunch replaces the chaincode pod of the same name. Deleted gracefully, the old pod
    stays in the API until the kubelet has stopped its container; a forced delete would remove
    it at once and start the new launch beside a chaincode still running."""

    def manifest(generation: str) -> dict[str, Any]:
        # The marker names the container's shell on the host, where its processes are seen.
        script = f"trap 'sleep 3; exit 0' TERM; while true; do sleep 0.1; done # {generation}"
        pod = busybox_pod("cc", script).to_dict()
        pod["spec"]["terminationGracePeriodSeconds"] = 30
        return dict(pod)

    first = f"k8scc-first-{ns}"
    kube = Kube(kubeconfig.from_file(testbed.control_plane.admin_kubeconfig), ns)
    kube.replace_pod(manifest(first), Incarnation("pods", "cc"), 60)
    wait_for(client, "cc", ns, phase_in("Running"))
    deadline = time.monotonic() + 30
    while not running_with(first):
        assert time.monotonic() < deadline, "the first container never ran"
        time.sleep(0.1)
    time.sleep(0.5)  # its TERM handler is in place: it is the script's first command
    kube.replace_pod(manifest(f"k8scc-second-{ns}"), Incarnation("pods", "cc"), 60)
    assert running_with(first) == []


def test_k8scc_pods_keep_their_images_entrypoint(testbed: Testbed, client: Client, ns: str) -> None:
    """Fabric sets only a container's Cmd, so an image's ENTRYPOINT runs first; so must it in
    the pods k8scc renders (the transfer volume aside, which this namespace has not)."""
    settings = config.parse(
        f"platforms:\n  golang:\n    buildImage: {ENTRYPOINT_IMAGE}\n"
        "buildEnv:\n  USE_SYSTEM_CA_CERTS: '1'\npod:\n  imagePullPolicy: Never\n"
    )
    pod = render.builder_pod(
        settings, PLATFORMS["golang"], "example.com/cc", "cc_1.0", "ccbuild", Identity("peer0"), "x"
    )
    pod["spec"]["volumes"][0] = {"name": render.TRANSFER_VOLUME, "emptyDir": {}}
    for mount in pod["spec"]["containers"][0]["volumeMounts"]:
        mount.pop("subPath", None)
    Kube(kubeconfig.from_file(testbed.control_plane.admin_kubeconfig), ns).create(
        pod, Incarnation("pods", "ccbuild")
    )
    wait_for(client, "ccbuild", ns, phase_in("Succeeded", "Failed"))
    output = "".join(client.log("ccbuild", namespace=ns, container="build"))
    # The entrypoint ran, then the build script it was handed (which finds no Go here).
    assert output.splitlines()[0] == "entrypoint: CA certificates installed before /bin/sh"
    assert "go: not found" in output


def test_memory_limit_gives_oomkilled(client: Client, ns: str) -> None:
    pod = busybox_pod("hungry", "x=a; while true; do x=$x$x; done")
    pod.spec.containers[0].resources = {"limits": {"memory": "32Mi"}}  # type: ignore[union-attr]
    client.create(pod, namespace=ns)
    final = wait_for(client, "hungry", ns, phase_in("Failed"), timeout=120)
    state = terminated(final)
    assert (state["reason"], state["exitCode"]) == ("OOMKilled", 137)


def test_missing_image_is_reported(client: Client, ns: str) -> None:
    pod = shell_pod(
        "absent",
        "true",
        container={"image": "localhost/k8scc/absent:1.0", "imagePullPolicy": "Never"},
    )
    client.create(pod, namespace=ns)

    def waiting_reason(p: dict[str, object]) -> bool:
        statuses = p.get("status", {}).get("containerStatuses") or []  # type: ignore[attr-defined]
        return any(
            s["state"].get("waiting", {}).get("reason") == "ErrImageNeverPull" for s in statuses
        )

    wait_for(client, "absent", ns, waiting_reason)
