"""The parts of `k8scc doctor` that need no cluster: the permission list against the Role, the
loopback test, the table, the objects it dry-runs and the local checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from k8scc import config, doctor, names
from k8scc.doctor import PERMISSIONS, STREAM_PERMISSIONS, Result
from tests.unit.helpers import is_dns_label, restricted_violations

pytestmark = pytest.mark.unit

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "chaincode" / "rbac.yaml"


def role_rules() -> list[dict[str, object]]:
    [role] = [d for d in yaml.safe_load_all(RBAC.read_text()) if d["kind"] == "Role"]
    return list(role["rules"])


def test_the_permissions_doctor_checks_are_exactly_what_the_role_grants() -> None:
    every = PERMISSIONS + STREAM_PERMISSIONS
    assert len(set(every)) == len(every)
    assert doctor.role_permissions(role_rules()) == set(every)


def test_streams_are_checked_only_in_the_mode_that_uses_them() -> None:
    assert doctor.needed_permissions(config.parse("")) == PERMISSIONS
    api = config.parse("transfer: {mode: api}")
    assert doctor.needed_permissions(api) == PERMISSIONS + STREAM_PERMISSIONS


def test_role_permissions_expands_rules_and_ignores_other_api_groups() -> None:
    rules = [
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]},
    ]
    assert doctor.role_permissions(rules) == {
        ("get", "pods"),
        ("watch", "pods"),
        ("get", "pods/log"),
        ("watch", "pods/log"),
    }


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:7052",
        "127.8.9.10:7052",
        "localhost:7052",
        "LOCALHOST:7052",
        "peer.localhost:7052",
        "0.0.0.0:7052",
        "[::1]:7052",
        "::1",
        "[::]:7052",
        "[::ffff:127.0.0.1]:7052",
        "localhost",
    ],
)
def test_loopback_addresses(address: str) -> None:
    assert doctor.is_loopback(address)


@pytest.mark.parametrize(
    "address",
    [
        "peer0.org1.svc.cluster.local:7052",
        "10.0.0.12:7052",
        "[fd00::12]:7052",
        "128.0.0.1:7052",
        "peer-0.peer:7052",
        "localhostess:7052",
    ],
)
def test_addresses_pods_can_reach(address: str) -> None:
    assert not doctor.is_loopback(address)


def test_the_table_aligns_columns_and_keeps_each_row_on_one_line() -> None:
    text = doctor.table(
        [
            Result("config", True, "/x/k8scc.yaml is valid"),
            Result("chaincode address", False, "a\nb"),
        ]
    )
    assert text == (
        "CHECK              RESULT  DETAIL\n"
        "config             PASS    /x/k8scc.yaml is valid\n"
        "chaincode address  FAIL    a b\n"
    )


def test_placeholder_objects_are_the_real_shape_and_pass_restricted() -> None:
    settings = config.parse("platforms: {java: null}")
    objects = doctor.placeholder_objects(settings)
    assert [what for what, _ in objects] == [
        "golang builder pod",
        "golang chaincode pod",
        "node builder pod",
        "node chaincode pod",
        "k8s chaincode pod",
        "TLS Secret",
    ]
    for _, manifest in objects:
        assert is_dns_label(manifest["metadata"]["name"])
        if manifest["kind"] == "Pod":
            assert restricted_violations(manifest) == []
    chaincode_pod = objects[1][1]
    secret = objects[-1][1]
    tls = [v for v in chaincode_pod["spec"]["volumes"] if v["name"] == "tls"]
    assert tls == [
        {"name": "tls", "secret": {"secretName": secret["metadata"]["name"], "defaultMode": 0o440}}
    ]


def test_transfer_check(tmp_path: Path) -> None:
    def check(mount: Path) -> Result:
        return doctor.check_transfer(config.parse(f"transfer: {{mountPath: {mount}}}"))

    assert check(tmp_path).passed
    assert list(tmp_path.iterdir()) == []
    assert check(tmp_path / "missing").detail.endswith("does not exist")
    (tmp_path / "file").write_text("")
    assert check(tmp_path / "file").detail.endswith("is not a directory")


def test_transfer_check_in_mode_api_needs_no_mount(tmp_path: Path) -> None:
    api = config.parse(f"transfer: {{mode: api, maxSize: 1Mi, mountPath: {tmp_path / 'none'}}}")
    result = doctor.check_transfer(api)
    assert result == Result(
        "transfer", True, "mode api: no volume, streams of at most 1048576 bytes"
    )


def test_images_check_needs_an_enabled_platform() -> None:
    assert doctor.check_images(config.parse("")).passed
    none = config.parse("platforms: {golang: null, node: null, java: null, k8s: null}")
    assert not doctor.check_images(none).passed
    only_k8s = doctor.check_images(
        config.parse("platforms: {golang: null, node: null, java: null}")
    )
    assert only_k8s == Result("images", True, "k8s: the image each package names")


def test_chaincode_address_check() -> None:
    plain = config.parse("")
    in_pod_by_config = config.parse("peer: {podName: peer-0}")
    loopback = {"CORE_PEER_CHAINCODEADDRESS": "127.0.0.1:7052"}
    assert doctor.check_chaincode_address(plain, loopback).passed
    assert not doctor.check_chaincode_address(in_pod_by_config, loopback).passed
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert not doctor.check_chaincode_address(plain, {**in_pod, **loopback}).passed
    # The first variable set is the one the peer uses.
    fallback = {"CORE_PEER_CHAINCODELISTENADDRESS": "peer-0.peer:7052", "CORE_PEER_ADDRESS": "::1"}
    result = doctor.check_chaincode_address(plain, {**in_pod, **fallback})
    assert result.passed
    assert result.detail == "CORE_PEER_CHAINCODELISTENADDRESS=peer-0.peer:7052"
    assert doctor.check_chaincode_address(None, in_pod).passed


def test_an_invalid_configuration_fails_every_check_needing_it(tmp_path: Path) -> None:
    bad = tmp_path / "k8scc.yaml"
    bad.write_text("peer: {idd: x}")
    results = doctor.diagnose(bad, None, {})
    assert [(r.check, r.passed) for r in results] == [
        ("config", False),
        ("api", False),
        ("permissions", False),
        ("admission", False),
        ("build cache", False),
        ("transfer", False),
        ("images", False),
        ("chaincode address", True),
    ]
    assert "peer.idd: unknown key" in results[0].detail


def test_placeholder_objects_for_a_label_carry_its_rules() -> None:
    rule = {
        "match": {"label": "asset_*"},
        "builder": {"labels": {"tier": "build"}},
        "chaincode": {"runAsUser": "image", "image": "registry.example.com/cc:2"},
    }
    settings = config.parse(yaml.safe_dump({"platforms": {"java": None}, "chaincodes": [rule]}))
    plain = dict(doctor.placeholder_objects(settings, "basic_1.0"))
    ruled = dict(doctor.placeholder_objects(settings, "asset_1.0"))
    assert all(restricted_violations(pod) == [] for what, pod in plain.items() if "pod" in what)
    assert ruled["golang builder pod"]["metadata"]["labels"]["tier"] == "build"
    golang = ruled["golang chaincode pod"]
    assert golang["spec"]["containers"][0]["image"] == "registry.example.com/cc:2"
    # The rule's image user drops runAsNonRoot: the dry run is asked about exactly that pod.
    assert restricted_violations(golang) == ["chaincode: runAsNonRoot is not true"]
    assert golang["metadata"]["annotations"][names.ANNOTATION_LABEL] == "asset_1.0"
