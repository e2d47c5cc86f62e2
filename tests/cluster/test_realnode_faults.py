"""Real faults on the real node while `run` follows a chaincode pod: a kubelet restart and a
containerd restart (containers keep running through both, as on any node), an API server
restart, and the pod deleted under it. The home-made agent could show none of these: its
containers ended with it, and its log streams never ended while a container ran."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
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
def built(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory, golang_output: Path) -> Built:
    """A builder to launch the session's Go build with."""
    workdir = tmp_path_factory.mktemp("realnode-faults")
    namespace = "faults"
    testbed.control_plane.create_namespace(namespace)
    apply_rbac(testbed.control_plane, namespace)
    volume = transfer_volume(testbed.control_plane, namespace, workdir / "volume")
    builder = make_builder(testbed, namespace, volume, workdir)
    return Built(testbed, builder, golang_output, namespace)


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


FAULTS: dict[str, Callable[[Testbed], None]] = {
    "kubelet restart": lambda bed: bed.real_node.restart_kubelet(),
    "containerd restart": lambda bed: bed.real_node.restart_containerd(),
    "API server restart": lambda bed: bed.control_plane.restart_apiserver(down_seconds=3),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_run_and_its_chaincode_live_through_a(built: Built, tmp_path: Path, fault: str) -> None:
    """`run` lives on, its container is the one from before with no restart, nothing
    registers twice, and `run` still follows its pod: deleting it ends `run` with an error."""
    with FakePeer(tls=True, host=built.bed.host_address) as peer:
        launch = Launch(built, peer, tmp_path)
        with contextlib.closing(built.bed.control_plane.client()) as admin:
            before = container_of(chaincode_pod(admin, built.namespace))
        FAULTS[fault](built.bed)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert launch.run.process.poll() is None, launch.run.stderr
            time.sleep(0.5)
        # A client of its own: the API server may have restarted under the one before.
        with contextlib.closing(built.bed.control_plane.client()) as admin:
            pod = chaincode_pod(admin, built.namespace)
            assert pod["status"]["phase"] == "Running"
            assert container_of(pod) == (before[0], 0)
            assert peer.registered() == [launch.chaincode_id]
            admin.delete(Pod, pod["metadata"]["name"], namespace=built.namespace)
        assert launch.run.process.wait(60) != 0
        assert "error" in launch.run.stderr.splitlines()[-1]
