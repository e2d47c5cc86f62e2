"""Real faults on the real node while `run` follows a chaincode pod: a kubelet restart and a
containerd restart (containers keep running through both, as on any node), an API server
restart, and the pod deleted under it. The home-made agent could show none of these: its
containers ended with it, and its log streams never ended while a container ran."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from testbed.cluster import Testbed
from tests.support.builder import (
    Builder,
    RunningStep,
    apply_rbac,
    make_builder,
    transfer_volume,
)
from tests.support.fakepeer import FakePeer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


@dataclass
class Built:
    bed: Testbed
    builder: Builder
    output: Path
    namespace: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, golang_output: Path) -> Iterator[Built]:
    """A real node and a builder to launch the session's Go build with (a build output is
    the same whichever node built it; test_fabric_images builds on the real node)."""
    workdir = tmp_path_factory.mktemp("realnode-faults")
    bed = Testbed(workdir / "bed", node="kubelet")
    bed.start()
    try:
        namespace = "faults"
        bed.control_plane.create_namespace(namespace)
        apply_rbac(bed.control_plane, namespace)
        volume = transfer_volume(bed.control_plane, namespace, workdir / "volume")
        builder = make_builder(bed, namespace, volume, workdir)
        yield Built(bed, builder, golang_output, namespace)
    finally:
        bed.stop()


@pytest.fixture
def admin(built: Built) -> Iterator[Client]:
    client = built.bed.control_plane.client()
    yield client
    client.close()


class Launch:
    def __init__(self, built: Built, peer: FakePeer, workdir: Path) -> None:
        self.chaincode_id = f"asset_1.0:{'ef' * 32}"
        meta = workdir / "run"
        meta.mkdir()
        (meta / "chaincode.json").write_text(json.dumps(peer.chaincode_json(self.chaincode_id)))
        self.run: RunningStep = built.builder.start("run", built.output, meta)
        assert peer.wait_registered(self.chaincode_id, timeout=120), self.run.stderr
        assert self.run.wait_for_line("| asset-transfer: starting go chaincode", 30)


def chaincode_pod(admin: Client, namespace: str) -> dict[str, Any]:
    [pod] = [p.to_dict() for p in admin.list(Pod, namespace=namespace)]
    return pod


def container_of(pod: dict[str, Any]) -> tuple[str, int]:
    [status] = pod["status"]["containerStatuses"]
    return status["containerID"], status["restartCount"]


def assert_still_running(admin: Client, built: Built, launch: Launch, before: str) -> None:
    """`run` lives on, its container is the one from before, and nothing left it."""
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert launch.run.process.poll() is None, launch.run.stderr
        time.sleep(0.5)
    pod = chaincode_pod(admin, built.namespace)
    assert pod["status"]["phase"] == "Running"
    assert container_of(pod) == (before, 0)


def test_a_kubelet_restart_leaves_the_chaincode_and_run_running(
    built: Built, admin: Client, tmp_path: Path
) -> None:
    with FakePeer(tls=True, host=built.bed.host_address) as peer:
        launch = Launch(built, peer, tmp_path)
        before, _ = container_of(chaincode_pod(admin, built.namespace))
        assert built.bed.real_node is not None
        built.bed.real_node.restart_kubelet()
        assert_still_running(admin, built, launch, before)
        assert peer.registered() == [launch.chaincode_id]  # no second registration
        # And `run` still follows the pod: deleting it ends `run`, as the peer must notice.
        admin.delete(Pod, chaincode_pod(admin, built.namespace)["metadata"]["name"],
                     namespace=built.namespace)  # fmt: skip
        assert launch.run.process.wait(60) != 0
        assert "error" in launch.run.stderr.splitlines()[-1]


def test_a_containerd_restart_leaves_the_chaincode_and_run_running(
    built: Built, admin: Client, tmp_path: Path
) -> None:
    with FakePeer(tls=True, host=built.bed.host_address) as peer:
        launch = Launch(built, peer, tmp_path)
        before, _ = container_of(chaincode_pod(admin, built.namespace))
        assert built.bed.real_node is not None
        built.bed.real_node.restart_containerd()
        assert_still_running(admin, built, launch, before)
        assert launch.run.stop() != 0
        assert "stopped by SIGTERM" in launch.run.stderr


def test_an_api_server_restart_leaves_run_following_its_pod(
    built: Built, admin: Client, tmp_path: Path
) -> None:
    with FakePeer(tls=True, host=built.bed.host_address) as peer:
        launch = Launch(built, peer, tmp_path)
        before, _ = container_of(chaincode_pod(admin, built.namespace))
        built.bed.control_plane.restart_apiserver(down_seconds=3)
        fresh = built.bed.control_plane.client()
        try:
            assert_still_running(fresh, built, launch, before)
        finally:
            fresh.close()
        assert launch.run.stop() != 0
        assert "stopped by SIGTERM" in launch.run.stderr
