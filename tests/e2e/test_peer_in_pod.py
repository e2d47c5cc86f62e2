"""The peer itself in a pod of the real node, deployed from deploy/ (kustomize, server-side
apply) with the image built from images/peer/Dockerfile: k8scc runs inside it with the pod's
in-cluster credentials, the pods it creates are owned by the peer's pod, and chaincode reaches
the peer at its pod address through the headless Service's DNS name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client

from testbed.cluster import Testbed
from testbed.peer_pod import POD, pod_network
from tests.e2e.test_k8scc import Deployment, deploy_sample, deployed, invoke_and_query

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@pytest.fixture
def in_pod(testbed: Testbed, admin: Client, namespace: str, tmp_path: Path) -> Iterator[Deployment]:
    network = pod_network(testbed, namespace, tmp_path)
    with deployed(network, testbed, admin, namespace) as deployment:
        yield deployment


def test_a_peer_in_a_pod_builds_launches_and_invokes_through_k8scc(in_pod: Deployment) -> None:
    deploy_sample(in_pod, "golang", "basic_1", 1)
    asset = invoke_and_query(in_pod, "asset1")
    assert (asset["ID"], asset["owner"], asset["appraisedValue"]) == ("asset1", "tom", 300)

    [peer] = in_pod.recorder.named(POD)
    [build] = in_pod.recorder.named("ccbuild-")
    [chaincode] = in_pod.recorder.named("cc-")
    owner = {"kind": "Pod", "name": POD, "uid": peer["metadata"]["uid"]}
    for pod in (build, chaincode):
        [reference] = pod["metadata"]["ownerReferences"]
        assert {key: reference[key] for key in owner} == owner
    assert "asset-transfer: starting go chaincode" in in_pod.network.peer_log()
    # The peer hands chaincode its DNS name, which resolves to the peer pod's own address.
    [container] = chaincode["spec"]["containers"]
    assert f"-peer.address={POD}.fabric-peer:7052" in container["args"] + container.get(
        "command", []
    )
    # Owned by the peer's pod, k8scc's pods go with it.
    in_pod.network.stop()
    assert in_pod.wait(lambda: in_pod.pods() == [], 90), in_pod.pods()
