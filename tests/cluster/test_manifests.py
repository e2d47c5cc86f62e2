"""The manifests under deploy/ are accepted by the API server as they are, build with kustomize,
apply server-side, and fit together: k8scc's configuration names the claim and mount path the
peer uses, the NetworkPolicies select the pods k8scc really creates and the peer really runs,
and the peer's pod template passes PodSecurity restricted."""

from __future__ import annotations

import copy
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
OVERLAY = DEPLOY / "overlays" / "example"
OVERLAY_NAMESPACE = "fabric-org1"

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
BASE_KINDS = Counter({**dict.fromkeys(KINDS, 1), "NetworkPolicy": 2})


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
    return {"base": kustomize(BASE), "overlay": kustomize(OVERLAY)}


def test_network_policies_are_accepted(admin: Client, namespace: str) -> None:
    documents = list(yaml.safe_load_all((BASE / "networkpolicy.yaml").read_text()))
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
    assert Counter(d["kind"] for d in overlay) == BASE_KINDS + Counter({"Namespace": 1})
    assert all(
        d["metadata"].get("namespace") == OVERLAY_NAMESPACE
        for d in overlay
        if d["kind"] != "Namespace"
    )
    namespace = one(overlay, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert peer_container(one(overlay, "StatefulSet"))["image"].endswith(
        "/k8scc-peer:3.1.1-k8scc0.1.0"
    )
    assert one(overlay, "PersistentVolumeClaim")["spec"]["storageClassName"] == "nfs-client"
    # A changed configuration gets a new ConfigMap name, so the peer pods roll.
    assert (
        one(base, "ConfigMap")["metadata"]["name"] != one(overlay, "ConfigMap")["metadata"]["name"]
    )


@pytest.mark.parametrize("variant", ["base", "overlay"])
def test_the_pieces_fit_together(built: dict[str, list[dict[str, Any]]], variant: str) -> None:
    documents = built[variant]
    statefulset = one(documents, "StatefulSet")
    pod_spec = statefulset["spec"]["template"]["spec"]
    peer_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    container = peer_container(statefulset)
    variables = env(container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}

    # k8scc's configuration is valid, in-cluster, and mounted where K8SCC_CFGFILE points.
    configmap = one(documents, "ConfigMap")
    settings = config.parse(configmap["data"]["k8scc.yaml"])
    assert settings.kubeconfig is None and settings.namespace is None
    [config_volume] = [v for v, s in volumes.items() if "configMap" in s]
    assert volumes[config_volume]["configMap"]["name"] == configmap["metadata"]["name"]
    assert variables["K8SCC_CFGFILE"] == f"{mounts[config_volume]}/k8scc.yaml"

    # The transfer claim: ReadWriteMany, named by the config, mounted at its mountPath.
    claim = one(documents, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["name"] == settings.transfer_claim
    [transfer] = [v for v, s in volumes.items() if "persistentVolumeClaim" in s]
    assert volumes[transfer]["persistentVolumeClaim"]["claimName"] == settings.transfer_claim
    assert mounts[transfer] == str(settings.transfer_mount_path)

    # The peer acts as the ServiceAccount the RoleBinding binds to the Role.
    account = one(documents, "ServiceAccount")["metadata"]["name"]
    binding = one(documents, "RoleBinding")
    assert pod_spec["serviceAccountName"] == account
    assert [s["name"] for s in binding["subjects"]] == [account]
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
    assert variables["CORE_PEER_CHAINCODEADDRESS"] == (
        f"$(POD_NAME).{service['metadata']['name']}:7052"
    )
    assert variables["CORE_PEER_CHAINCODELISTENADDRESS"] == "0.0.0.0:7052"
    assert variables["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert [e["name"] for e in container["env"]].index("POD_NAME") == 0

    # The NetworkPolicies select the labels k8scc really gives its pods (pod.labels included)
    # and let chaincode reach exactly the peer pods of the StatefulSet.
    chaincode_labels = names.pod_labels("run", "peer0", "asset_1.0", "ab" * 32, settings.labels)
    builder_labels = names.pod_labels("build", "peer0", "asset_1.0", "ab" * 32, settings.labels)
    policy = one(documents, "NetworkPolicy", "k8scc-chaincode")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], chaincode_labels)
    assert not selects(policy["podSelector"]["matchLabels"], builder_labels)
    [to_peer] = [rule for rule in policy["egress"] if rule["ports"][0]["port"] == 7052]
    assert selects(to_peer["to"][0]["podSelector"]["matchLabels"], peer_labels)
    builder_policy = one(documents, "NetworkPolicy", "k8scc-builder")["spec"]
    assert selects(builder_policy["podSelector"]["matchLabels"], builder_labels)
    assert not selects(builder_policy["podSelector"]["matchLabels"], chaincode_labels)


def check_applied(
    client: Client, documents: list[dict[str, Any]], namespace: str
) -> dict[str, Any]:
    """Every object exists, was written by server-side apply, and the Role is the minimal one;
    returns the objects by kind."""
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
    role = client.get(Role, "k8scc", namespace=namespace).to_dict()
    assert role["rules"] == rbac_rules()
    return found


def test_the_base_applies_server_side_into_a_namespace(
    testbed: Testbed, admin: Client, namespace: str, built: dict[str, list[dict[str, Any]]]
) -> None:
    admin_kubeconfig = testbed.control_plane.admin_kubeconfig
    for _ in range(2):  # applying again changes nothing and conflicts with nothing
        kubectl(
            "apply", "--server-side", "-k", str(BASE), "-n", namespace, kubeconfig=admin_kubeconfig
        )
    check_applied(admin, built["base"], namespace)

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
        created = admin.get(Namespace, OVERLAY_NAMESPACE).metadata
        assert created is not None and created.labels is not None
        assert created.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        found = check_applied(admin, built["overlay"], OVERLAY_NAMESPACE)
        assert (found["StatefulSet"].metadata.labels or {})["app.kubernetes.io/part-of"] == (
            "fabric-org1"
        )
        pod = pod_from_template(one(built["overlay"], "StatefulSet"))
        assert admitted(admin, pod, OVERLAY_NAMESPACE) == ""
    finally:
        kubectl(
            "delete",
            "namespace",
            OVERLAY_NAMESPACE,
            "--wait=false",
            "--ignore-not-found",
            kubeconfig=admin_kubeconfig,
        )
