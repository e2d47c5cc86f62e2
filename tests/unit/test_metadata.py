"""metadata.json and chaincode.json as the peer writes them, and every way they can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k8scc.errors import K8sccError
from k8scc.metadata import ChaincodeJson, read_chaincode_json, read_metadata
from tests.unit.helpers import PeerTls, peer_tls

pytestmark = pytest.mark.unit

HASH = "5f1c9e0b" * 8
PACKAGE_ID = f"my_cc+v1.0:{HASH}"


@pytest.fixture(scope="module")
def tls() -> PeerTls:
    return peer_tls()


def write(directory: Path, name: str, content: bytes | str | dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(content, dict):
        # compact, as Go's json.Marshal writes it
        content = json.dumps(content, separators=(",", ":"))
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return directory


def metadata_error(tmp_path: Path, content: bytes | str | dict[str, Any]) -> str:
    with pytest.raises(K8sccError) as raised:
        read_metadata(write(tmp_path / "meta", "metadata.json", content))
    message = str(raised.value)
    assert "\n" not in message
    return message


# --- metadata.json ----------------------------------------------------------------------------


def test_metadata_as_the_cli_writes_it(tmp_path: Path) -> None:
    raw = b'{"path":"github.com/example/cc","type":"golang","label":"my_cc+v1.0","extra":1}'
    metadata = read_metadata(write(tmp_path, "metadata.json", raw))
    assert metadata.type == "golang"
    assert metadata.label == "my_cc+v1.0"
    assert metadata.path == "github.com/example/cc"


def test_metadata_path_and_label_are_optional(tmp_path: Path) -> None:
    metadata = read_metadata(write(tmp_path, "metadata.json", {"type": "node"}))
    assert (metadata.type, metadata.label, metadata.path) == ("node", "", "")


def test_metadata_missing(tmp_path: Path) -> None:
    with pytest.raises(K8sccError, match=r"metadata\.json not found at .*metadata\.json"):
        read_metadata(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is not valid JSON"),
        (b"{type: golang}", "is not valid JSON"),
        (b'{"type": "golang",}', "is not valid JSON"),
        (b"\xff\xfe\x00garbage", "is not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'"golang"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b'{"label": "cc"}', "field 'type' is missing"),
        (b'{"type": null}', "field 'type' is missing"),
        (b'{"type": 5}', "field 'type' is a number, not a string"),
        (b'{"type": "golang", "label": 5}', "field 'label' is a number"),
        (b'{"type": "golang", "path": ["x"]}', "field 'path' is an array"),
    ],
)
def test_metadata_invalid(tmp_path: Path, content: bytes, expected: str) -> None:
    message = metadata_error(tmp_path, content)
    assert message.startswith("metadata.json")
    assert expected in message


@pytest.mark.parametrize("label", ["+cc", "_cc", ".cc", "-cc", "my cc", "my/cc", "my:cc", "ccé"])
def test_metadata_bad_label(tmp_path: Path, label: str) -> None:
    message = metadata_error(tmp_path, {"type": "golang", "label": label})
    assert f"label {label!r} is not a valid Fabric package label" in message


@pytest.mark.parametrize("label", ["a", "A", "0", "my_cc", "My.CC+1-2_x", "a" * 300])
def test_metadata_valid_labels(tmp_path: Path, label: str) -> None:
    metadata = read_metadata(write(tmp_path, "metadata.json", {"type": "java", "label": label}))
    assert metadata.label == label


@pytest.mark.parametrize("path", ["-toolexec=/tmp/evil", "-o", "--modfile=x", "-"])
def test_metadata_path_that_go_build_would_read_as_a_flag(tmp_path: Path, path: str) -> None:
    message = metadata_error(tmp_path, {"type": "golang", "path": path})
    assert message == (
        f"metadata.json: path {path!r} begins with '-', which go build would read as a flag"
    )


@pytest.mark.parametrize("path", ["github.com/ex-ample/my-cc", "./cc", "cc-"])
def test_metadata_paths_with_dashes_inside_are_fine(tmp_path: Path, path: str) -> None:
    metadata = read_metadata(write(tmp_path, "metadata.json", {"type": "golang", "path": path}))
    assert metadata.path == path


# --- chaincode.json ---------------------------------------------------------------------------


def chaincode(tls: PeerTls | None, **changes: Any) -> dict[str, Any]:
    """chaincode.json content in the peer's key order."""
    data: dict[str, Any] = {
        "chaincode_id": PACKAGE_ID,
        "peer_address": "peer0.org1.example.com:7052",
        "client_cert": tls.client_cert if tls else "",
        "client_key": tls.client_key if tls else "",
        "root_cert": tls.root_cert if tls else "",
        "mspid": "Org1MSP",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def read(tmp_path: Path, content: bytes | str | dict[str, Any]) -> ChaincodeJson:
    return read_chaincode_json(write(tmp_path / "run", "chaincode.json", content))


def chaincode_error(tmp_path: Path, content: bytes | str | dict[str, Any]) -> str:
    with pytest.raises(K8sccError) as raised:
        read(tmp_path, content)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("chaincode.json")
    return message


def test_chaincode_json_with_tls(tmp_path: Path, tls: PeerTls) -> None:
    assert tls.client_key.startswith("-----BEGIN EC PRIVATE KEY-----\n")  # PKCS#8 inside
    parsed = read(tmp_path, chaincode(tls))
    assert parsed.tls is True
    assert parsed.chaincode_id == PACKAGE_ID
    assert parsed.label == "my_cc+v1.0"
    assert parsed.package_hash == HASH
    assert parsed.peer_address == "peer0.org1.example.com:7052"
    assert parsed.mspid == "Org1MSP"
    # passed through byte for byte: no relabelling, no re-encoding
    assert parsed.client_key == tls.client_key
    assert parsed.client_cert == tls.client_cert
    assert parsed.root_cert == tls.root_cert


def test_chaincode_json_accepts_other_key_headers(tmp_path: Path, tls: PeerTls) -> None:
    relabelled = tls.client_key.replace("EC PRIVATE KEY", "PRIVATE KEY")
    assert read(tmp_path, chaincode(tls, client_key=relabelled)).client_key == relabelled


def test_chaincode_json_without_tls(tmp_path: Path) -> None:
    parsed = read(tmp_path, chaincode(None))
    assert parsed.tls is False
    assert (parsed.client_cert, parsed.client_key, parsed.root_cert) == ("", "", "")


def test_chaincode_json_tls_fields_may_be_absent(tmp_path: Path) -> None:
    content = chaincode(None)
    for key in ("client_cert", "client_key", "root_cert"):
        del content[key]
    assert read(tmp_path, content).tls is False


@pytest.mark.parametrize(
    "address", ["peer0:7052", "10.0.0.5:7052", "[::1]:7052", "peer0.org1.example.com:1"]
)
def test_chaincode_json_peer_addresses(tmp_path: Path, address: str) -> None:
    assert read(tmp_path, chaincode(None, peer_address=address)).peer_address == address


def test_chaincode_id_splits_at_the_last_colon(tmp_path: Path) -> None:
    # the label cannot hold a colon, so the last one separates label and hash
    message = chaincode_error(tmp_path, chaincode(None, chaincode_id=f"a:b:{HASH}"))
    assert "chaincode_id label 'a:b' is not a valid Fabric package label" in message


@pytest.mark.parametrize(
    "missing", [("client_cert",), ("client_key",), ("root_cert",), ("client_cert", "root_cert")]
)
def test_chaincode_json_partial_tls_rejected(
    tmp_path: Path, tls: PeerTls, missing: tuple[str, ...]
) -> None:
    message = chaincode_error(tmp_path, chaincode(tls, **dict.fromkeys(missing, "")))
    assert "client_cert, client_key and root_cert must be all set or all empty" in message


@pytest.mark.parametrize(
    "chaincode_id",
    [
        "mycc",
        f"mycc{HASH}",
        f":{HASH}",
        "mycc:",
        "mycc:abc",
        f"mycc:{HASH.upper()}",
        f"mycc:{HASH}0",
        f"mycc:{HASH[:-1]}",
        f"mycc:{HASH[:-1]}g",
    ],
)
def test_chaincode_json_malformed_chaincode_id(tmp_path: Path, chaincode_id: str) -> None:
    message = chaincode_error(tmp_path, chaincode(None, chaincode_id=chaincode_id))
    assert f"chaincode_id {chaincode_id!r} is not <label>:<sha256 hex>" in message


@pytest.mark.parametrize("label", ["+cc", "my cc", "ccé", "-x"])
def test_chaincode_json_bad_label_in_id(tmp_path: Path, label: str) -> None:
    message = chaincode_error(tmp_path, chaincode(None, chaincode_id=f"{label}:{HASH}"))
    assert "is not a valid Fabric package label" in message


@pytest.mark.parametrize(
    "address",
    [
        "grpcs://peer0:7052",
        "https://peer0:7052",
        "dns://peer0:7052",
        "peer0",
        "peer0:",
        ":7052",
        "peer0:grpc",
        "",
    ],
)
def test_chaincode_json_bad_peer_address(tmp_path: Path, address: str) -> None:
    message = chaincode_error(tmp_path, chaincode(None, peer_address=address))
    assert f"peer_address {address!r} is not host:port" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"mspid": ""}, "field 'mspid' is empty"),
        ({"mspid": None}, "field 'mspid' is missing"),
        ({"chaincode_id": None}, "field 'chaincode_id' is missing"),
        ({"peer_address": None}, "field 'peer_address' is missing"),
        ({"peer_address": 7052}, "field 'peer_address' is a number, not a string"),
        ({"client_cert": 1}, "field 'client_cert' is a number, not a string"),
    ],
)
def test_chaincode_json_bad_fields(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    assert expected in chaincode_error(tmp_path, chaincode(None, **changes))


def test_chaincode_json_missing_or_not_json(tmp_path: Path) -> None:
    with pytest.raises(K8sccError, match=r"chaincode\.json not found at"):
        read_chaincode_json(tmp_path)
    assert "is not valid JSON" in chaincode_error(tmp_path, b'{"chaincode_id": ')
    assert "must be a JSON object" in chaincode_error(tmp_path, b"[1]")


def test_chaincode_json_key_not_pem(tmp_path: Path, tls: PeerTls) -> None:
    not_pem = "".join(tls.key_body_lines)  # the key's base64 without PEM armour
    message = chaincode_error(tmp_path, chaincode(tls, client_key=not_pem))
    assert "field 'client_key' is not a PEM private key" in message


def test_chaincode_json_certificate_where_the_key_belongs(tmp_path: Path, tls: PeerTls) -> None:
    message = chaincode_error(tmp_path, chaincode(tls, client_key=tls.client_cert))
    assert "field 'client_key' is not a PEM private key" in message


@pytest.mark.parametrize("field", ["client_cert", "root_cert"])
def test_chaincode_json_certificate_not_pem(tmp_path: Path, tls: PeerTls, field: str) -> None:
    message = chaincode_error(tmp_path, chaincode(tls, **{field: tls.client_key}))
    assert f"field {field!r} is not a PEM CERTIFICATE" in message


def key_variants(tls: PeerTls) -> list[dict[str, Any]]:
    """chaincode.json documents holding the key and something wrong elsewhere (or in it)."""
    key = tls.client_key
    body = "".join(tls.key_body_lines)
    return [
        chaincode(tls, chaincode_id="bad"),
        chaincode(tls, chaincode_id=f"+x:{HASH}"),
        chaincode(tls, peer_address="grpcs://peer0:7052"),
        chaincode(tls, mspid=""),
        chaincode(tls, mspid=None),
        chaincode(tls, client_cert=""),
        chaincode(tls, root_cert=""),
        chaincode(tls, client_cert="not a cert"),
        chaincode(tls, root_cert=key),
        chaincode(tls, client_cert=key),
        chaincode(tls, client_key=body),
        chaincode(tls, client_key=key.replace("PRIVATE KEY", "PUBLIC KEY")),
        chaincode(tls, client_key=key[:-40]),  # truncated but still "PEM-looking"
    ]


def test_no_error_message_contains_key_material(tmp_path: Path, tls: PeerTls) -> None:
    secrets = [tls.client_key, *tls.key_body_lines, "".join(tls.key_body_lines)]
    raised = 0
    for index, content in enumerate(key_variants(tls)):
        try:
            read_chaincode_json(write(tmp_path / str(index), "chaincode.json", content))
        except K8sccError as error:
            raised += 1
            message = str(error)
            for secret in secrets:
                assert secret.strip() not in message
        # the same content as a broken JSON document
        broken = json.dumps(content)[:-1]
        with pytest.raises(K8sccError) as invalid:
            read_chaincode_json(write(tmp_path / f"{index}b", "chaincode.json", broken))
        for secret in secrets:
            assert secret.strip() not in str(invalid.value)
    # every variant is rejected, the truncated key too: it has no footer
    assert raised == len(key_variants(tls))


@pytest.mark.parametrize(
    ("case", "key"),
    [
        ("body not base64", "-----BEGIN EC PRIVATE KEY-----\n%%%%\n-----END EC PRIVATE KEY-----\n"),
        ("empty body", "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"),
        ("no footer", "-----BEGIN EC PRIVATE KEY-----\n{body}\n"),
        (
            "footer of another kind",
            "-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END CERTIFICATE-----",
        ),
        (
            "encrypted",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}\n-----END ENCRYPTED PRIVATE KEY-----",
        ),
        ("a certificate", "-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"),
        ("header only in text", "see -----BEGIN PRIVATE KEY----- for details"),
    ],
)
def test_chaincode_json_key_of_the_wrong_shape(
    tmp_path: Path, tls: PeerTls, case: str, key: str
) -> None:
    body = "\n".join(tls.key_body_lines)
    message = chaincode_error(tmp_path, chaincode(tls, client_key=key.format(body=body)))
    assert "field 'client_key' is not a PEM private key" in message


@pytest.mark.parametrize("kind", ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"])
def test_chaincode_json_key_kinds_and_surrounding_text(
    tmp_path: Path, tls: PeerTls, kind: str
) -> None:
    body = "\n".join(tls.key_body_lines)
    # CRLF line ends and explanatory text around the block are still PEM
    key = f"Bag Attributes\r\n-----BEGIN {kind}-----\r\n{body}\r\n-----END {kind}-----\r\n"
    assert read(tmp_path, chaincode(tls, client_key=key)).client_key == key


def test_chaincode_json_certificates_must_be_well_formed(tmp_path: Path, tls: PeerTls) -> None:
    cut = tls.root_cert.replace("-----END CERTIFICATE-----", "")
    message = chaincode_error(tmp_path, chaincode(tls, root_cert=cut))
    assert "field 'root_cert' is not a PEM CERTIFICATE" in message
    # a bundle of several certificates is a valid root_cert
    assert read(tmp_path, chaincode(tls, root_cert=tls.root_cert * 2)).root_cert


@pytest.mark.parametrize(
    ("value", "kind"),
    [(True, "a boolean"), (1.5, "a number"), ({}, "an object"), ([], "an array")],
)
def test_wrong_types_are_named_as_json_names_them(tmp_path: Path, value: Any, kind: str) -> None:
    message = metadata_error(tmp_path, {"type": value})
    assert f"field 'type' is {kind}, not a string" in message
