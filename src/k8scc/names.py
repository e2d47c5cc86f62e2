"""Names, labels and annotations of the objects k8scc creates.

Fabric labels may hold `+`, `.`, `_` and capitals and be any length; Kubernetes names and label
values may not. Every name is a readable slug of the label plus a hash of what makes the object
unique, so it is DNS-safe, at most 63 characters, and the same for the same peer and package:
a new `run` finds the pod of its previous incarnation by name.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping

MAX_NAME = 63
HASH_LENGTH = 10
GROUP = "k8scc.hyperledger.org"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PEER = f"{GROUP}/peer"
LABEL_STEP = f"{GROUP}/step"
LABEL_CHAINCODE = f"{GROUP}/chaincode-label"
LABEL_PACKAGE_HASH = f"{GROUP}/package-hash"
ANNOTATION_PACKAGE_ID = f"{GROUP}/package-id"
ANNOTATION_PEER_ID = f"{GROUP}/peer-id"
# The pod (or host) of the peer process: two peers given one id tell their objects apart by it.
ANNOTATION_PEER_INSTANCE = f"{GROUP}/peer-instance"
ANNOTATION_MSPID = f"{GROUP}/mspid"
ANNOTATION_LABEL = f"{GROUP}/label"
# Random per create call: tells the object a retried create stored from an earlier one's.
ANNOTATION_CREATE_ID = f"{GROUP}/create-id"

_NOT_DNS = re.compile(r"[^a-z0-9]+")


def nonce(nbytes: int) -> str:
    """Random hex, as secrets.token_hex gives, without the modules `secrets` loads into `run`."""
    return os.urandom(nbytes).hex()


def digest(*parts: str, length: int = HASH_LENGTH) -> str:
    """A short lower-case hex digest; the NUL separator keeps ("a", "bc") apart from ("ab", "c")."""
    # surrogateescape: a CORE_PEER_ID with bytes that are not UTF-8 still hashes.
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:length]


def slug(text: str, limit: int) -> str:
    """Lower-case alphanumerics and single dashes, no dash at either end, at most `limit` long."""
    return _NOT_DNS.sub("-", text.lower()).strip("-")[:limit].strip("-")


def object_name(kind: str, label: str, *unique: str) -> str:
    """`<kind>-<slug of label>-<hash>`, or `<kind>-<hash>` when the label has no usable letters."""
    hashed = digest(kind, label, *unique)
    room = MAX_NAME - len(kind) - len(hashed) - 2
    readable = slug(label, room)
    return "-".join(part for part in (kind, readable, hashed) if part)


def peer_key(peer_id: str) -> str:
    """A label value identifying the peer: readable where possible, unique by its hash."""
    return object_name("peer", peer_id)


def chaincode_name(peer_id: str, package_id: str) -> str:
    """The chaincode pod's name: one per peer and package, so a launch finds the pod of the one
    before it; its Secret and transfer directory are the launch's own (launch_name)."""
    label = package_id.rsplit(":", 1)[0]
    return object_name("cc", label, peer_id, package_id)


def launch_name(pod_name: str, unique: str) -> str:
    """A launch's transfer directory and TLS Secret: a launch may overlap the end of the one
    before it, whose pod has the same name, so these are never shared; `unique` is random per
    launch."""
    return f"{pod_name}-{unique}"


def build_name(peer_id: str, label: str, unique: str) -> str:
    """The builder pod and its transfer directory; `unique` (random per build) keeps two
    builds of one package apart."""
    return object_name("ccbuild", label, peer_id, unique)


def pod_labels(
    step: str,
    peer_id: str,
    label: str,
    package_hash: str = "",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    result = {
        **(extra or {}),
        LABEL_MANAGED_BY: "k8scc",
        LABEL_COMPONENT: "chaincode" if step == "run" else "chaincode-builder",
        LABEL_STEP: step,
        LABEL_PEER: peer_key(peer_id),
        LABEL_CHAINCODE: slug(label, MAX_NAME) or "unnamed",
    }
    if package_hash:
        result[LABEL_PACKAGE_HASH] = package_hash[:MAX_NAME]
    return result


def pod_annotations(
    peer_id: str,
    label: str,
    package_id: str = "",
    mspid: str = "",
    extra: Mapping[str, str] | None = None,
    instance: str = "",
) -> dict[str, str]:
    result = {**(extra or {}), ANNOTATION_PEER_ID: peer_id, ANNOTATION_LABEL: label}
    if instance:
        result[ANNOTATION_PEER_INSTANCE] = instance
    if package_id:
        result[ANNOTATION_PACKAGE_ID] = package_id
    if mspid:
        result[ANNOTATION_MSPID] = mspid
    return result
