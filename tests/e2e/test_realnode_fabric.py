"""A real Fabric peer and orderer with k8scc on the test bed's real node, with images that
behave like Fabric's: chaincode pods have their own network namespace and reach the peer at
the node's bridge address. Java is the case that matters: built from the stock javaenv layout
(the image's wrapper, its offline caches under a /root of mode 0700) and run as its user."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.cluster import Testbed
from testbed.k8scc_setup import k8scc_network
from tests.e2e.test_k8scc import Deployment, PodRecorder, deploy_sample, invoke_and_query
from tests.support.builder import transfer_volume

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    with Testbed(tmp_path_factory.mktemp("realnode-fabric"), node="kubelet") as testbed:
        yield testbed


@pytest.fixture
def java_deployment(bed: Testbed, tmp_path: Path) -> Iterator[Deployment]:
    namespace = "java-on-the-real-node"
    # Java runs as the javaenv image's user, which `baseline` admits (docs/security.md).
    bed.control_plane.create_namespace(namespace, enforce="baseline")
    volume = transfer_volume(bed.control_plane, namespace, tmp_path / "volume")
    network = k8scc_network(bed, namespace, volume, tmp_path, "3.1", True)
    client = bed.control_plane.client()
    recorder = PodRecorder(bed.control_plane.client(), namespace)
    threading.Thread(target=recorder.run, daemon=True).start()
    network.start()
    try:
        yield Deployment(network, client, namespace, recorder)
    finally:
        network.stop()
        recorder.stop.set()
        client.close()


def test_java_from_the_stock_javaenv_layout_registers_at_a_real_peer(
    java_deployment: Deployment,
) -> None:
    deploy_sample(java_deployment, "java", "basic_java_1", 1)
    asset = invoke_and_query(java_deployment, "asset1")
    assert (asset["ID"], asset["owner"], asset["appraisedValue"]) == ("asset1", "tom", 300)
    [chaincode] = java_deployment.recorder.named("cc-")
    assert chaincode["spec"]["containers"][0]["image"] == "hyperledger/fabric-javaenv:2.5"
    assert "runAsUser" not in chaincode["spec"]["securityContext"]
    assert "asset-transfer: starting java chaincode" in java_deployment.network.peer_log()
