"""Steps running side by side: builds of different packages and of the same package at once,
and two peers sharing a namespace and a transfer volume without touching each other's pods."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod, Secret

from k8scc.names import LABEL_PEER
from testbed.cluster import Testbed
from tests.cluster.test_failures import CHAINCODE_ID, launch
from tests.cluster.test_steps import wait_clean
from tests.support.builder import (
    Builder,
    RunningStep,
    apply_rbac,
    make_builder,
    small_node_package,
)
from tests.support.fakepeer import FakePeer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def build_all(builder: Builder, packages: list[tuple[Path, Path]], workdir: Path) -> list[Path]:
    outputs = []
    steps = []
    for index, (source, metadata) in enumerate(packages):
        output = workdir / f"bld-{index}"
        output.mkdir()
        outputs.append(output)
        steps.append(builder.start("build", source, metadata, output))
    for step in steps:
        try:
            code = step.process.wait(480)
        finally:
            step.stop()
        assert code == 0, step.stderr
    return outputs


def test_five_different_packages_build_at_once(
    builder: Builder, admin: Client, namespace: str, tmp_path: Path
) -> None:
    labels = [f"pkg{i}_1.0" for i in range(5)]
    packages = [small_node_package(tmp_path / label, label) for label in labels]
    outputs = build_all(builder, packages, tmp_path)
    for label, output in zip(labels, outputs, strict=True):
        assert (output / "output" / "package-label.txt").read_text() == label
        assert json.loads((output / "k8scc-build.json").read_text())["platform"] == "node"
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_the_same_package_installed_twice_at_once_builds_twice(
    builder: Builder, admin: Client, namespace: str, tmp_path: Path
) -> None:
    package = small_node_package(tmp_path / "pkg", "asset_1.0")
    outputs = build_all(builder, [package, package], tmp_path)
    built = [sorted(p.relative_to(o) for p in o.rglob("*")) for o in outputs]
    assert built[0] == built[1]
    assert (outputs[0] / "output" / "package-label.txt").read_text() == "asset_1.0"
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_two_peers_share_a_namespace_without_touching_each_others_pods(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    """Both peers launch the same chaincode id: each gets its own pod and Secret, and one
    peer's relaunch, stop and cleanup leave the other's launch running."""
    (tmp_path / "peer1").mkdir()
    other = make_builder(
        testbed, namespace, volume_dir, tmp_path / "peer1", {"peer": {"id": "peer1.org1"}}
    )
    with (
        FakePeer(tls=True, host=testbed.host_address) as peer0,
        FakePeer(tls=True, host=testbed.host_address) as peer1,
    ):
        first = launch(builder, golang_output, tmp_path / "a", peer0)
        second = launch(other, golang_output, tmp_path / "b", peer1)
        relaunch: RunningStep | None = None
        try:
            assert peer0.wait_registered(CHAINCODE_ID, 60), first.stderr
            assert peer1.wait_registered(CHAINCODE_ID, 60), second.stderr
            pods = {
                str(p.metadata.name): p for p in admin.list(Pod, namespace=namespace) if p.metadata
            }
            assert len(pods) == 2
            peers = {p.metadata.labels[LABEL_PEER] for p in pods.values()}  # type: ignore[index, union-attr]
            assert len(peers) == 2
            [theirs] = [n for n in pods if _launched_by(second.stderr, n)]
            # peer0 relaunches (the stale launch is replaced) and then stops for good.
            relaunch = launch(builder, golang_output, tmp_path / "c", peer0)
            assert first.process.wait(60) == 1
            assert relaunch.wait_for_line("chaincode pod started", 60), relaunch.stderr
            assert relaunch.stop() != 0
            # The relaunch deleted its pod gracefully: it goes once the node has stopped it.
            left = _pods_once_settled(admin, namespace, expected=[theirs])
            assert list(left) == [theirs]
            assert left[theirs].metadata.uid == pods[theirs].metadata.uid  # type: ignore[union-attr]
            # The Secret of their launch, the one their pod mounts, is all that is left.
            mounted = [v.secret.secretName for v in left[theirs].spec.volumes if v.secret]  # type: ignore[union-attr]
            assert [s.metadata.name for s in admin.list(Secret, namespace=namespace)] == mounted  # type: ignore[union-attr]
            assert str(mounted[0]).startswith(f"{theirs}-")
            assert [d.name for d in volume_dir.iterdir() if d.name.startswith(theirs)]
            assert second.process.poll() is None
        finally:
            for step in (first, second, relaunch):
                if step is not None:
                    step.stop()
    assert wait_clean(admin, namespace, builder.transfer) == []


def _pods_once_settled(
    admin: Client, namespace: str, expected: list[str], timeout: float = 60
) -> dict[str, Pod]:
    deadline = time.monotonic() + timeout
    while True:
        pods = {str(p.metadata.name): p for p in admin.list(Pod, namespace=namespace) if p.metadata}
        if sorted(pods) == sorted(expected) or time.monotonic() > deadline:
            return pods
        time.sleep(0.2)


def _launched_by(stderr: str, pod: str) -> bool:
    return re.search(rf"pod={re.escape(pod)}\b", stderr) is not None


def test_a_second_peer_with_the_same_id_is_refused_and_touches_nothing(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    """Two peers misconfigured with one id would share pod and Secret names and delete each
    other's in a loop; the second is refused in one line naming the first one's pod."""
    apply_rbac(testbed.control_plane, namespace)
    peers = []
    for pod_name in ("peer-a", "peer-b"):
        (tmp_path / pod_name).mkdir()
        settings = {"peer": {"id": "peer0.org1", "podName": pod_name}}
        peers.append(make_builder(testbed, namespace, volume_dir, tmp_path / pod_name, settings))
    first_builder, second_builder = peers
    with (
        FakePeer(tls=True, host=testbed.host_address) as peer_a,
        FakePeer(tls=True, host=testbed.host_address) as peer_b,
    ):
        first = launch(first_builder, golang_output, tmp_path / "a", peer_a)
        try:
            assert peer_a.wait_registered(CHAINCODE_ID, 60), first.stderr
            before = _objects(admin, namespace)
            directories = sorted(volume_dir.iterdir())
            second = launch(second_builder, golang_output, tmp_path / "b", peer_b)
            assert second.process.wait(60) != 0
            second.stop()
            errors = [line for line in second.stderr.splitlines() if ": error: " in line]
            assert len(errors) == 1, second.stderr
            assert "another peer with the same id" in errors[0] and "peer-a" in errors[0]
            assert _objects(admin, namespace) == before
            assert sorted(volume_dir.iterdir()) == directories
            assert first.process.poll() is None
            assert not peer_b.wait_registered(CHAINCODE_ID, 1)
        finally:
            first.stop()
    assert wait_clean(admin, namespace, first_builder.transfer) == []


def _objects(admin: Client, namespace: str) -> set[tuple[str, str]]:
    """(kind, uid) of every pod and Secret: what a replacement would change."""
    pods = {
        ("Pod", str(p.metadata.uid)) for p in admin.list(Pod, namespace=namespace) if p.metadata
    }
    secrets = {
        ("Secret", str(s.metadata.uid))
        for s in admin.list(Secret, namespace=namespace)
        if s.metadata
    }
    return pods | secrets
