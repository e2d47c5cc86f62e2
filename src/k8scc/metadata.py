"""The two JSON documents the peer hands to k8scc: the package's metadata.json and the
launch's chaincode.json."""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path

from k8scc.errors import K8sccError

# detect imports this module and must not pay for importing typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Fabric's own rule for package labels (core/chaincode/persistence).
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# A header, a base64 body and the footer of the same kind; checking the shape here turns a
# mangled key into one error line instead of a chaincode pod that cannot start.
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\s]*?)-----END \1-----")


class Metadata:
    __slots__ = ("label", "path", "type")

    def __init__(self, type: str, label: str, path: str) -> None:
        self.type = type
        self.label = label
        self.path = path


class ChaincodeJson:
    __slots__ = ("chaincode_id", "client_cert", "client_key", "mspid", "peer_address", "root_cert")

    def __init__(
        self,
        chaincode_id: str,
        peer_address: str,
        client_cert: str,
        client_key: str,
        root_cert: str,
        mspid: str,
    ) -> None:
        self.chaincode_id = chaincode_id
        self.peer_address = peer_address
        self.client_cert = client_cert
        self.client_key = client_key
        self.root_cert = root_cert
        self.mspid = mspid

    @property
    def tls(self) -> bool:
        return bool(self.client_cert or self.client_key or self.root_cert)

    @property
    def label(self) -> str:
        return self.chaincode_id.rsplit(":", 1)[0]

    @property
    def package_hash(self) -> str:
        return self.chaincode_id.rsplit(":", 1)[1]


def read_object(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise K8sccError(f"{what} not found at {path}") from None
    except OSError as error:
        raise K8sccError(f"cannot read {what} at {path}: {error.strerror}") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise K8sccError(f"{what} at {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise K8sccError(f"{what} at {path} must be a JSON object")
    return data


# Named as JSON names them: the peer's files are JSON, not Python.
_JSON_KINDS = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    list: "an array",
    dict: "an object",
}


def string_field(data: dict[str, Any], key: str, what: str, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        kind = "missing" if value is None else f"{_JSON_KINDS[type(value)]}, not a string"
        raise K8sccError(f"{what}: field {key!r} is {kind}")
    return value


def read_metadata(metadata_dir: Path) -> Metadata:
    data = read_object(metadata_dir / "metadata.json", "metadata.json")
    what = "metadata.json"
    kind = string_field(data, "type", what)
    label = string_field(data, "label", what, required=False)
    if label and not LABEL_PATTERN.fullmatch(label):
        raise K8sccError(f"{what}: label {label!r} is not a valid Fabric package label")
    path = string_field(data, "path", what, required=False)
    # The path is go build's package argument, and go build has no `--` to end its flags.
    if path.startswith("-"):
        raise K8sccError(
            f"{what}: path {path!r} begins with '-', which go build would read as a flag"
        )
    return Metadata(type=kind, label=label, path=path)


def _pem_kinds(value: str) -> list[str]:
    """The kinds of the well-formed PEM blocks in `value`; text around them is allowed."""
    kinds = []
    for match in _PEM_BLOCK.finditer(value):
        try:
            body = base64.b64decode("".join(match.group(2).split()), validate=True)
        except binascii.Error:
            continue
        if body:
            kinds.append(match.group(1))
    return kinds


def _check_pem(value: str, field: str, kinds: tuple[str, ...]) -> None:
    if value and not set(_pem_kinds(value)) & set(kinds):
        raise K8sccError(f"chaincode.json: field {field!r} is not a PEM {' or '.join(kinds)}")


def read_chaincode_json(run_metadata_dir: Path) -> ChaincodeJson:
    """Reads and checks chaincode.json; the key is never echoed in an error."""
    data = read_object(run_metadata_dir / "chaincode.json", "chaincode.json")
    what = "chaincode.json"
    parsed = ChaincodeJson(
        chaincode_id=string_field(data, "chaincode_id", what),
        peer_address=string_field(data, "peer_address", what),
        client_cert=string_field(data, "client_cert", what, required=False),
        client_key=string_field(data, "client_key", what, required=False),
        root_cert=string_field(data, "root_cert", what, required=False),
        mspid=string_field(data, "mspid", what),
    )
    label, sep, digest = parsed.chaincode_id.rpartition(":")
    if not sep or not label or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise K8sccError(
            f"{what}: chaincode_id {parsed.chaincode_id!r} is not <label>:<sha256 hex>"
        )
    if not LABEL_PATTERN.fullmatch(label):
        raise K8sccError(
            f"{what}: chaincode_id label {label!r} is not a valid Fabric package label"
        )
    host, colon, port = parsed.peer_address.rpartition(":")
    valid_port = re.fullmatch(r"[0-9]{1,5}", port) is not None and 0 < int(port) < 65536
    if not colon or not host or not valid_port or "://" in parsed.peer_address:
        raise K8sccError(f"{what}: peer_address {parsed.peer_address!r} is not host:port")
    if not parsed.mspid:
        raise K8sccError(f"{what}: field 'mspid' is empty")
    tls_fields = (parsed.client_cert, parsed.client_key, parsed.root_cert)
    if any(tls_fields) and not all(tls_fields):
        raise K8sccError(
            f"{what}: client_cert, client_key and root_cert must be all set or all empty"
        )
    _check_pem(parsed.client_cert, "client_cert", ("CERTIFICATE",))
    _check_pem(parsed.root_cert, "root_cert", ("CERTIFICATE",))
    # The peer labels a PKCS#8 key `EC PRIVATE KEY`; any unencrypted private key kind will do.
    keys = [
        kind
        for kind in _pem_kinds(parsed.client_key)
        if kind.endswith("PRIVATE KEY") and not kind.startswith("ENCRYPTED")
    ]
    if parsed.client_key and not keys:
        raise K8sccError(f"{what}: field 'client_key' is not a PEM private key")
    return parsed
