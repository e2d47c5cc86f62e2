"""Object names and label values stay DNS-safe, short, stable and distinct for any Fabric label
and any peer id."""

from __future__ import annotations

import os
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from k8scc import names
from tests.unit.helpers import PROPERTY, is_dns_label

pytestmark = pytest.mark.unit

HASH_A = "a" * 64
HASH_B = "0123456789abcdef" * 4

AWKWARD_LABELS = [
    "mycc",
    "my+cc",
    "my.cc.v1.0",
    "my_cc_1",
    "MyChainCode",
    "UPPER",
    "a" * 255,
    "Ab+_.-" * 50,
    "+++",
    "...",
    "___",
    "-",
    "",
    "1cc",
    "0",
    "123456789",
    "ünïcödé",
    "链码",
    "İstanbul",
    "x-",
    "cc--double",
]
AWKWARD_PEERS = [
    "peer0.org1.example.com",
    "PEER_0",
    "",
    "+++",
    "p" * 300,
    "пир",
    "peer 0\nnewline",
]

# What a Fabric label may look like (core/chaincode/persistence), up to 300 characters.
_FIRST = string.ascii_letters + string.digits
fabric_labels = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_FIRST),
    st.text(alphabet=_FIRST + "_.+-", max_size=299),
)
package_hashes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


def all_names(peer_id: str, label: str, package_hash: str = HASH_A) -> list[str]:
    package_id = f"{label}:{package_hash}"
    return [
        names.chaincode_name(peer_id, package_id),
        names.build_name(peer_id, label, "content-digest"),
        names.peer_key(peer_id),
    ]


def label_values(peer_id: str, label: str, package_hash: str = HASH_A) -> list[str]:
    values = [
        *names.pod_labels("build", peer_id, label).values(),
        *names.pod_labels("run", peer_id, label, package_hash).values(),
    ]
    return values


@pytest.mark.parametrize("label", AWKWARD_LABELS)
@pytest.mark.parametrize("peer_id", AWKWARD_PEERS)
def test_names_and_label_values_are_dns_labels(peer_id: str, label: str) -> None:
    for value in all_names(peer_id, label) + label_values(peer_id, label):
        assert is_dns_label(value), value


@pytest.mark.parametrize("label", AWKWARD_LABELS)
def test_names_are_stable(label: str) -> None:
    assert all_names("peer0", label) == all_names("peer0", label)
    assert label_values("peer0", label) == label_values("peer0", label)


def test_names_keep_a_readable_slug_of_the_label() -> None:
    assert names.chaincode_name("peer0", f"My_CC.v1+x:{HASH_A}").startswith("cc-my-cc-v1-x-")
    assert names.build_name("peer0", "My_CC", "x").startswith("ccbuild-my-cc-")
    assert names.peer_key("peer0.org1.example.com").startswith("peer-peer0-org1-example-com-")
    # a label without letters or digits still gives a name: kind and hash
    assert names.chaincode_name("peer0", f"+++:{HASH_A}").startswith("cc-")
    assert len(names.chaincode_name("peer0", f"{'a' * 255}:{HASH_A}")) == 63


def test_names_differ_for_different_peers_and_packages() -> None:
    base = names.chaincode_name("peer0", f"mycc:{HASH_A}")
    assert names.chaincode_name("peer1", f"mycc:{HASH_A}") != base
    assert names.chaincode_name("peer0", f"mycc:{HASH_B}") != base
    assert names.chaincode_name("peer0", f"mycc2:{HASH_A}") != base
    # labels that slug the same still differ
    assert names.chaincode_name("peer0", f"my_cc:{HASH_A}") != names.chaincode_name(
        "peer0", f"my.cc:{HASH_A}"
    )
    assert names.build_name("peer0", "mycc", "x") != names.build_name("peer1", "mycc", "x")
    assert names.build_name("peer0", "mycc", "x") != names.build_name("peer0", "mycc", "y")
    assert names.peer_key("peer0.org1") != names.peer_key("peer0_org1")
    # the kind is part of the hash: a chaincode and a build never share a name
    assert names.chaincode_name("p", f"x:{HASH_A}") != names.build_name("p", "x", f"x:{HASH_A}")


def test_pod_labels_content() -> None:
    labels = names.pod_labels("run", "peer0", "My_CC", HASH_A, extra={"team": "blue"})
    assert labels[names.LABEL_MANAGED_BY] == "k8scc"
    assert labels[names.LABEL_COMPONENT] == "chaincode"
    assert labels[names.LABEL_STEP] == "run"
    assert labels[names.LABEL_PEER] == names.peer_key("peer0")
    assert labels[names.LABEL_CHAINCODE] == "my-cc"
    assert labels[names.LABEL_PACKAGE_HASH] == HASH_A[:63]
    assert labels["team"] == "blue"
    build = names.pod_labels("build", "peer0", "+++")
    assert build[names.LABEL_COMPONENT] == "chaincode-builder"
    assert build[names.LABEL_CHAINCODE] == "unnamed"
    assert names.LABEL_PACKAGE_HASH not in build
    # k8scc's own labels win over configured ones of the same key
    clash = names.pod_labels("build", "peer0", "cc", extra={names.LABEL_MANAGED_BY: "me"})
    assert clash[names.LABEL_MANAGED_BY] == "k8scc"


def test_pod_annotations_keep_the_raw_values() -> None:
    notes = names.pod_annotations("Peer 0", "My+CC", f"My+CC:{HASH_A}", "Org1MSP", extra={"a": "b"})
    assert notes == {
        "a": "b",
        names.ANNOTATION_PEER_ID: "Peer 0",
        names.ANNOTATION_LABEL: "My+CC",
        names.ANNOTATION_PACKAGE_ID: f"My+CC:{HASH_A}",
        names.ANNOTATION_MSPID: "Org1MSP",
    }
    assert names.pod_annotations("p", "l") == {
        names.ANNOTATION_PEER_ID: "p",
        names.ANNOTATION_LABEL: "l",
    }


def test_digest_separates_parts() -> None:
    assert names.digest("a", "bc") != names.digest("ab", "c")
    assert len(names.digest("x")) == names.HASH_LENGTH
    assert names.digest("x", length=20).startswith(names.digest("x"))


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("My_CC.v1", 63, "my-cc-v1"),
        ("+++", 63, ""),
        ("--a--b--", 63, "a-b"),
        ("abcdef-ghi", 7, "abcdef"),  # cut, then no trailing dash
        ("ünï", 63, "n"),
    ],
)
def test_slug(text: str, limit: int, expected: str) -> None:
    assert names.slug(text, limit) == expected


@PROPERTY
@given(label=fabric_labels, peer_id=st.text(max_size=300), package_hash=package_hashes)
def test_property_names_are_dns_labels(label: str, peer_id: str, package_hash: str) -> None:
    for value in all_names(peer_id, label, package_hash) + label_values(
        peer_id, label, package_hash
    ):
        assert is_dns_label(value), value


@PROPERTY
@given(label=fabric_labels, peer_id=st.text(max_size=300), package_hash=package_hashes)
def test_property_names_are_stable(label: str, peer_id: str, package_hash: str) -> None:
    assert all_names(peer_id, label, package_hash) == all_names(peer_id, label, package_hash)
    assert label_values(peer_id, label, package_hash) == label_values(peer_id, label, package_hash)


@PROPERTY
@given(label=fabric_labels, peers=st.lists(st.text(max_size=300), min_size=2, max_size=2))
def test_property_names_differ_between_peers(label: str, peers: list[str]) -> None:
    first, second = peers
    assume(first != second)
    for a, b in zip(all_names(first, label), all_names(second, label), strict=True):
        assert a != b
    assert (
        names.pod_labels("run", first, label)[names.LABEL_PEER]
        != names.pod_labels("run", second, label)[names.LABEL_PEER]
    )


@PROPERTY
@given(
    labels=st.lists(fabric_labels, min_size=2, max_size=2),
    hashes=st.lists(package_hashes, min_size=2, max_size=2),
    peer_id=st.text(max_size=300),
)
def test_property_names_differ_between_packages(
    labels: list[str], hashes: list[str], peer_id: str
) -> None:
    first = f"{labels[0]}:{hashes[0]}"
    second = f"{labels[1]}:{hashes[1]}"
    assume(first != second)
    assert names.chaincode_name(peer_id, first) != names.chaincode_name(peer_id, second)
    if labels[0] != labels[1]:
        assert names.build_name(peer_id, labels[0], "c") != names.build_name(
            peer_id, labels[1], "c"
        )


@PROPERTY
@given(label=fabric_labels, raw_peer_id=st.binary(max_size=100), package_hash=package_hashes)
def test_property_peer_ids_that_are_not_utf8_still_give_dns_labels(
    label: str, raw_peer_id: bytes, package_hash: str
) -> None:
    # CORE_PEER_ID reaches Python as surrogate-escaped text when its bytes are not UTF-8.
    peer_id = os.fsdecode(raw_peer_id)
    for value in all_names(peer_id, label, package_hash) + label_values(
        peer_id, label, package_hash
    ):
        assert is_dns_label(value), value


def test_nonce_is_random_hex_of_the_length_asked() -> None:
    made = {names.nonce(4) for _ in range(50)}
    assert len(made) == 50
    assert all(len(n) == 8 and set(n) <= set(string.hexdigits.lower()) for n in made)
