"""Pure helpers the node agent uses to read a pod spec the way a kubelet does."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_QUANTITY = re.compile(r"^([0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)$")


def quantity_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes quantity such as 64Mi or 0.5G, rounded up like the kubelet."""
    match = _QUANTITY.match(quantity.strip())
    if not match or (match.group(2) and match.group(2) not in _SUFFIXES):
        raise ValueError(f"invalid quantity {quantity!r}")
    value = Decimal(match.group(1)) * Decimal(_SUFFIXES.get(match.group(2), 1))
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: unknown references stay as written, $$ escapes a $."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(substitute, text)


def safe_subpath(volume_root: Path, sub_path: str) -> Path:
    """Joins a subPath below its volume, refusing escapes as the kubelet does."""
    if not sub_path:
        return volume_root
    pure = PurePosixPath(sub_path)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"subPath {sub_path!r} must be a relative path without '..'")
    joined = (volume_root / sub_path).resolve()
    if joined != volume_root.resolve() and volume_root.resolve() not in joined.parents:
        raise ValueError(f"subPath {sub_path!r} escapes its volume")
    return joined


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """Value of a downward-API fieldRef path."""
    metadata = pod.get("metadata", {})
    labels = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
    if labels:
        return str(metadata.get(labels.group(1), {}).get(labels.group(2), ""))
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": pod.get("spec", {}).get("nodeName"),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path not in simple:
        raise ValueError(f"unsupported fieldRef {path!r}")
    return str(simple[path] or "")


def _match_expression(labels: Mapping[str, str], expression: Mapping[str, Any]) -> bool:
    key, operator = expression["key"], expression["operator"]
    values = expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False


def node_matches(spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """nodeSelector and required node affinity, as the scheduler's filter sees them."""
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms")
    if not required:
        return True
    return any(
        all(_match_expression(labels, e) for e in term.get("matchExpressions") or [])
        for term in required
    )
