"""The peer itself in a pod of the real node, deployed from deploy/ (kustomize, server-side
apply) with the image built from images/peer/Dockerfile: k8scc runs inside it with the pod's
in-cluster credentials, moves files through the API with no shared volume, creates its pods in
a chaincode namespace that holds none of the peer's Secrets, and chaincode reaches the peer at
its pod address through the headless Service's DNS name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import PersistentVolumeClaim, Pod, Secret

from testbed.cluster import BUILD_CACHE_CLAIM, Testbed
from testbed.peer_pod import POD, PeerPod, pod_network
from tests.e2e.test_k8scc import Deployment, deploy_sample, deployed, invoke_and_query

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@pytest.fixture
def in_pod(testbed: Testbed, admin: Client, namespace: str, tmp_path: Path) -> Iterator[Deployment]:
    """The deployment, watching the chaincode namespace."""
    network = pod_network(testbed, namespace, tmp_path)
    assert isinstance(network.peer_launcher, PeerPod)
    with deployed(network, testbed, admin, network.peer_launcher.chaincode_namespace) as deployment:
        yield deployment


def names(
    client: Client, kind: type[Pod | Secret | PersistentVolumeClaim], namespace: str
) -> set[str]:
    return {str(o.metadata.name) for o in client.list(kind, namespace=namespace) if o.metadata}


def test_a_peer_in_a_pod_builds_launches_and_invokes_through_k8scc(
    in_pod: Deployment, namespace: str
) -> None:
    deploy_sample(in_pod, "golang", "basic_1", 1)
    asset = invoke_and_query(in_pod, "asset1")
    assert (asset["ID"], asset["owner"], asset["appraisedValue"]) == ("asset1", "tom", 300)

    [build] = in_pod.recorder.named("ccbuild-")
    [chaincode] = in_pod.recorder.named("cc-")
    for pod in (build, chaincode):
        # Owner references cannot cross namespaces; files came through the API.
        assert "ownerReferences" not in pod["metadata"]
        claims = [v for v in pod["spec"].get("volumes", []) if "persistentVolumeClaim" in v]
        assert [v["persistentVolumeClaim"]["claimName"] for v in claims] in (
            [],
            [BUILD_CACHE_CLAIM],
        )
    assert "asset-transfer: starting go chaincode" in in_pod.network.peer_log()
    # The peer hands chaincode a name that resolves from the chaincode namespace.
    [container] = chaincode["spec"]["containers"]
    address = f"-peer.address={POD}.fabric-peer.{namespace}.svc:7052"
    assert address in container["args"] + container.get("command", [])

    # The peer's namespace holds only the peer; the chaincode namespace none of its Secrets
    # and no claim but the build cache.
    client = in_pod.client
    assert names(client, Pod, namespace) == {POD}
    assert "fabric-peer-crypto" in names(client, Secret, namespace)
    launches = names(client, Secret, in_pod.namespace)
    assert all(name.startswith(str(chaincode["metadata"]["name"])) for name in launches), launches
    assert names(client, PersistentVolumeClaim, in_pod.namespace) == {BUILD_CACHE_CLAIM}
    assert names(client, PersistentVolumeClaim, namespace) == {f"ledger-{POD}"}

    # With the peer gone, no chaincode of it runs on.
    in_pod.network.stop()

    def nothing_runs() -> bool:
        listed = client.list(Pod, namespace=in_pod.namespace)
        return all(p.status is None or p.status.phase in ("Succeeded", "Failed") for p in listed)

    assert in_pod.wait(nothing_runs, 90), in_pod.pods()
