"""The manifests under deploy/ are accepted by the API server as they are, build with kustomize,
apply server-side, and fit together: the peer's namespace (deploy/base) and the chaincode
namespace (deploy/chaincode) name each other, k8scc moves files through the API with no claim
(or, with the transfer-volume component, through the claim its configuration names), the
NetworkPolicies select the pods k8scc really creates and the peer really runs, and the peer's
pod template passes PodSecurity restricted."""

from __future__ import annotations

import copy
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import (
    ConfigMap,
    Namespace,
    PersistentVolumeClaim,
    Pod,
    Service,
    ServiceAccount,
)
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from k8scc import config, names
from testbed import binaries
from testbed.cluster import Testbed
from testbed.objects import load
from tests.support.builder import rbac_rules

pytestmark = pytest.mark.cluster

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BASE = DEPLOY / "base"
CHAINCODE = DEPLOY / "chaincode"
VOLUME = DEPLOY / "components" / "transfer-volume"
OVERLAY = DEPLOY / "overlays" / "example"
# The namespaces deploy/ names by default, and the example overlay too.
PEER_NAMESPACE = "fabric-org1"
CHAINCODE_NAMESPACE = "fabric-org1-chaincode"

KINDS: dict[str, Any] = {
    "ServiceAccount": ServiceAccount,
    "Role": Role,
    "RoleBinding": RoleBinding,
    "ConfigMap": ConfigMap,
    "PersistentVolumeClaim": PersistentVolumeClaim,
    "Service": Service,
    "StatefulSet": StatefulSet,
    "NetworkPolicy": NetworkPolicy,
}
BASE_KINDS = Counter(["ServiceAccount", "ConfigMap", "Service", "StatefulSet"])
CHAINCODE_KINDS = Counter(["Role", "RoleBinding", "NetworkPolicy", "NetworkPolicy"])


def kubectl(*args: str, kubeconfig: Path | None = None) -> str:
    command = [str(binaries.ensure(binaries.KUBECTL) / "kubectl"), *args]
    if kubeconfig:
        command += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


def kustomize(directory: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(kubectl("kustomize", str(directory))) if d]


def one(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [
        d
        for d in documents
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return found


def peer_container(statefulset: dict[str, Any]) -> dict[str, Any]:
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def pod_from_template(statefulset: dict[str, Any]) -> dict[str, Any]:
    """A pod as the StatefulSet controller makes them, with its claim from the template; named
    apart from the controller's own (the test bed runs that controller too)."""
    name = statefulset["metadata"]["name"]
    template = copy.deepcopy(statefulset["spec"]["template"])
    for claim in statefulset["spec"].get("volumeClaimTemplates", []):
        template["spec"]["volumes"].append(
            {
                "name": claim["metadata"]["name"],
                "persistentVolumeClaim": {"claimName": f"{claim['metadata']['name']}-{name}-9"},
            }
        )
    return {
        "metadata": {"name": f"{name}-9", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


def admitted(client: Client, pod: dict[str, Any], namespace: str) -> str:
    """'' when a server-side dry-run create of `pod` succeeds, else the API server's reason."""
    try:
        client.create(load(Pod, pod), namespace=namespace, dry_run=True)
    except ApiError as error:
        return str(error.status.message)
    return ""


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {
        "base": kustomize(BASE),
        "chaincode": kustomize(CHAINCODE),
        "overlay": kustomize(OVERLAY),
    }


def test_network_policies_are_accepted(admin: Client, namespace: str) -> None:
    documents = list(yaml.safe_load_all((CHAINCODE / "networkpolicy.yaml").read_text()))
    for document in documents:
        admin.create(load(NetworkPolicy, document), namespace=namespace)
    names_ = {p.metadata.name for p in admin.list(NetworkPolicy, namespace=namespace) if p.metadata}
    assert names_ == {"k8scc-chaincode", "k8scc-builder"}
    chaincode = admin.get(NetworkPolicy, "k8scc-chaincode", namespace=namespace)
    assert chaincode.spec is not None and chaincode.spec.egress is not None
    assert [port.port for rule in chaincode.spec.egress[:1] for port in rule.ports or []] == [7052]


def test_kustomize_builds_the_base_and_the_overlay(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    base, overlay = built["base"], built["overlay"]
    assert Counter(d["kind"] for d in base) == BASE_KINDS
    assert Counter(d["kind"] for d in built["chaincode"]) == CHAINCODE_KINDS
    assert Counter(d["kind"] for d in overlay) == (
        BASE_KINDS + CHAINCODE_KINDS + Counter({"Namespace": 2})
    )
    placed = {
        PEER_NAMESPACE: Counter(d["kind"] for d in base),
        CHAINCODE_NAMESPACE: CHAINCODE_KINDS,
    }
    for name, kinds in placed.items():
        assert (
            Counter(d["kind"] for d in overlay if d["metadata"].get("namespace") == name) == kinds
        )
    namespaces = [d for d in overlay if d["kind"] == "Namespace"]
    assert {n["metadata"]["name"] for n in namespaces} == set(placed)
    for namespace in namespaces:
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert peer_container(one(overlay, "StatefulSet"))["image"].endswith(
        "/k8scc-peer:3.1.1-k8scc0.1.0"
    )
    # A changed configuration gets a new ConfigMap name, so the peer pods roll.
    assert (
        one(base, "ConfigMap")["metadata"]["name"] != one(overlay, "ConfigMap")["metadata"]["name"]
    )


@pytest.mark.parametrize("variant", ["base", "overlay"])
def test_the_pieces_fit_together(built: dict[str, list[dict[str, Any]]], variant: str) -> None:
    documents = built[variant] + (built["chaincode"] if variant == "base" else [])
    statefulset = one(documents, "StatefulSet")
    pod_spec = statefulset["spec"]["template"]["spec"]
    peer_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    container = peer_container(statefulset)
    variables = env(container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}

    # k8scc's configuration is valid, in-cluster, mounted where K8SCC_CFGFILE points, and
    # sends pods to the chaincode namespace with files through the API: no claim anywhere.
    configmap = one(documents, "ConfigMap")
    settings = config.parse(configmap["data"]["k8scc.yaml"])
    assert settings.kubeconfig is None
    assert (settings.namespace, settings.transfer_mode) == (CHAINCODE_NAMESPACE, "api")
    [config_volume] = [v for v, s in volumes.items() if "configMap" in s]
    assert volumes[config_volume]["configMap"]["name"] == configmap["metadata"]["name"]
    assert variables["K8SCC_CFGFILE"] == f"{mounts[config_volume]}/k8scc.yaml"
    assert [d for d in documents if d["kind"] == "PersistentVolumeClaim"] == []
    assert [v for v, s in volumes.items() if "persistentVolumeClaim" in s] == []

    # The peer acts as the ServiceAccount of its namespace that the RoleBinding of the
    # chaincode namespace binds to the Role.
    account = one(documents, "ServiceAccount")["metadata"]["name"]
    binding = one(documents, "RoleBinding")
    assert pod_spec["serviceAccountName"] == account
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": PEER_NAMESPACE}
    ]
    assert binding["roleRef"]["name"] == one(documents, "Role")["metadata"]["name"]
    assert one(documents, "Role")["rules"] == rbac_rules()

    # Chaincode pods reach the peer by <pod>.<headless Service> on its chaincode port.
    service = one(documents, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert selects(service["spec"]["selector"], peer_labels)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["chaincode"] == 7052
    assert 7052 in [p["port"] for p in service["spec"]["ports"]]
    # The name resolves from the chaincode namespace: it carries the peer's.
    assert variables["CORE_PEER_CHAINCODEADDRESS"] == (
        f"$(POD_NAME).{service['metadata']['name']}.$(POD_NAMESPACE).svc:7052"
    )
    assert variables["CORE_PEER_CHAINCODELISTENADDRESS"] == "0.0.0.0:7052"
    assert variables["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    order = [e["name"] for e in container["env"]]
    assert order.index("POD_NAME") < order.index("CORE_PEER_ID")
    assert order.index("POD_NAMESPACE") < order.index("CORE_PEER_CHAINCODEADDRESS")

    # The NetworkPolicies select the labels k8scc really gives its pods (pod.labels included)
    # and let chaincode reach exactly the peer pods of the StatefulSet.
    chaincode_labels = names.pod_labels("run", "peer0", "asset_1.0", "ab" * 32, settings.labels)
    builder_labels = names.pod_labels("build", "peer0", "asset_1.0", "ab" * 32, settings.labels)
    policy = one(documents, "NetworkPolicy", "k8scc-chaincode")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], chaincode_labels)
    assert not selects(policy["podSelector"]["matchLabels"], builder_labels)
    [to_peer] = [rule for rule in policy["egress"] if rule["ports"][0]["port"] == 7052]
    assert selects(to_peer["to"][0]["podSelector"]["matchLabels"], peer_labels)
    assert to_peer["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": PEER_NAMESPACE
    }
    builder_policy = one(documents, "NetworkPolicy", "k8scc-builder")["spec"]
    assert selects(builder_policy["podSelector"]["matchLabels"], builder_labels)
    assert not selects(builder_policy["podSelector"]["matchLabels"], chaincode_labels)


def check_applied(
    client: Client, documents: list[dict[str, Any]], namespace: str
) -> dict[str, Any]:
    """Every object exists in `namespace`, was written by server-side apply, and a Role is the
    minimal one; returns the objects by kind."""
    found: dict[str, Any] = {}
    for document in documents:
        kind = document["kind"]
        if kind == "Namespace":
            continue
        obj = client.get(KINDS[kind], document["metadata"]["name"], namespace=namespace)
        # An applied object that sets nothing but its name owns no fields, so has no entry.
        if set(document) - {"apiVersion", "kind", "metadata"} or set(document["metadata"]) - {
            "name",
            "namespace",
        }:
            managers = {(f.manager, f.operation) for f in obj.metadata.managedFields or []}
            assert ("kubectl", "Apply") in managers, (kind, managers)
        found[kind] = obj
    if "Role" in found:
        assert found["Role"].to_dict()["rules"] == rbac_rules()
    return found


def test_the_bases_apply_server_side_into_two_namespaces(
    testbed: Testbed, admin: Client, namespace: str, built: dict[str, list[dict[str, Any]]]
) -> None:
    admin_kubeconfig = testbed.control_plane.admin_kubeconfig
    chaincode_namespace = f"{namespace[:50]}-cc"
    testbed.control_plane.create_namespace(chaincode_namespace)
    for _ in range(2):  # applying again changes nothing and conflicts with nothing
        for directory, target in ((BASE, namespace), (CHAINCODE, chaincode_namespace)):
            kubectl(
                "apply", "--server-side", "-k", str(directory), "-n", target,
                kubeconfig=admin_kubeconfig,
            )  # fmt: skip
    assert set(check_applied(admin, built["base"], namespace)) == set(BASE_KINDS)
    assert set(check_applied(admin, built["chaincode"], chaincode_namespace)) == set(
        CHAINCODE_KINDS
    )

    # The namespace enforces restricted: the peer's pod is admitted, and the check has teeth.
    pod = pod_from_template(one(built["base"], "StatefulSet"))
    assert admitted(admin, pod, namespace) == ""
    del pod["spec"]["securityContext"]
    assert "violates PodSecurity" in admitted(admin, pod, namespace)
    assert "fabric-peer-9" not in {
        p.metadata.name for p in admin.list(Pod, namespace=namespace) if p.metadata
    }


def test_the_overlay_applies_server_side(
    testbed: Testbed, admin: Client, built: dict[str, list[dict[str, Any]]]
) -> None:
    admin_kubeconfig = testbed.control_plane.admin_kubeconfig
    try:
        kubectl("apply", "--server-side", "-k", str(OVERLAY), kubeconfig=admin_kubeconfig)
        for name in (PEER_NAMESPACE, CHAINCODE_NAMESPACE):
            created = admin.get(Namespace, name).metadata
            assert created is not None and created.labels is not None
            assert created.labels["pod-security.kubernetes.io/enforce"] == "restricted"
            placed = [d for d in built["overlay"] if d["metadata"].get("namespace") == name]
            found = check_applied(admin, placed, name)
            for obj in found.values():
                assert (obj.metadata.labels or {})["app.kubernetes.io/part-of"] == "fabric-org1"
        pod = pod_from_template(one(built["overlay"], "StatefulSet"))
        assert admitted(admin, pod, PEER_NAMESPACE) == ""
    finally:
        for name in (PEER_NAMESPACE, CHAINCODE_NAMESPACE):
            kubectl(
                "delete", "namespace", name, "--wait=false", "--ignore-not-found",
                kubeconfig=admin_kubeconfig,
            )  # fmt: skip


def test_the_volume_component_mounts_the_claim_its_configuration_names(tmp_path: Path) -> None:
    """The volume mode as its component's comment tells: deploy/base, the component, and a
    k8scc.yaml naming the claim and mount path with no namespace."""
    settings = {
        "fabricVersion": "3.1",
        "transfer": {"claimName": "k8scc-transfer", "mountPath": "/var/lib/k8scc/transfer"},
    }
    (tmp_path / "k8scc.yaml").write_text(yaml.safe_dump(settings))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, tmp_path)],
        "components": [os.path.relpath(VOLUME, tmp_path)],
        "configMapGenerator": [
            {"name": "k8scc-config", "behavior": "replace", "files": ["k8scc.yaml"]}
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    documents = kustomize(tmp_path)
    parsed = config.parse(one(documents, "ConfigMap")["data"]["k8scc.yaml"])
    assert (parsed.namespace, parsed.transfer_mode) == (None, "volume")
    claim = one(documents, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["name"] == parsed.transfer_claim
    statefulset = one(documents, "StatefulSet")
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in peer_container(statefulset)["volumeMounts"]}
    [transfer] = [v for v, spec in volumes.items() if "persistentVolumeClaim" in spec]
    assert volumes[transfer]["persistentVolumeClaim"]["claimName"] == parsed.transfer_claim
    assert mounts[transfer] == str(parsed.transfer_mount_path)
