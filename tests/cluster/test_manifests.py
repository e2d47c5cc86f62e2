"""The manifests under deploy/ are accepted by the API server as they are."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lightkube import Client
from lightkube.resources.networking_v1 import NetworkPolicy

from testbed.objects import load

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "base"


def test_network_policies_are_accepted(admin: Client, namespace: str) -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "networkpolicy.yaml").read_text()))
    for document in documents:
        admin.create(load(NetworkPolicy, document), namespace=namespace)
    names = {p.metadata.name for p in admin.list(NetworkPolicy, namespace=namespace) if p.metadata}
    assert names == {"k8scc-chaincode", "k8scc-builder"}
    chaincode = admin.get(NetworkPolicy, "k8scc-chaincode", namespace=namespace)
    assert chaincode.spec is not None and chaincode.spec.egress is not None
    assert [port.port for rule in chaincode.spec.egress[:1] for port in rule.ports or []] == [7052]
