"""Shared by the unit tests: Hypothesis settings, TLS material shaped like the peer's, a
PodSecurity `restricted` checker and a DNS-1123 label check."""

from __future__ import annotations

import base64
import datetime
import re
import textwrap
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, settings

# Deterministic (same examples every run), no per-example deadline, modest size.
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and DNS_LABEL.fullmatch(value) is not None


# --- TLS material as a Fabric peer writes it into chaincode.json ----------------------------


@dataclass(frozen=True)
class PeerTls:
    client_cert: str
    client_key: str  # PKCS#8 DER under an `EC PRIVATE KEY` header: the peer's quirk
    root_cert: str

    @property
    def key_body_lines(self) -> list[str]:
        """The base64 lines between the PEM header and footer."""
        return [line for line in self.client_key.splitlines() if not line.startswith("-----")]


def _pem(der: bytes, kind: str) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=24))
        .not_valid_after(now + datetime.timedelta(hours=24))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def peer_tls() -> PeerTls:
    """A per-process CA and a client certificate/key pair, ECDSA P-256 like tlsgen."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("chaincode-ca", ca_key, "chaincode-ca", ca_key, ca=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("chaincode-client", client_key, "chaincode-ca", ca_key, ca=False)
    pkcs8 = client_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return PeerTls(
        client_cert=client.public_bytes(serialization.Encoding.PEM).decode(),
        client_key=_pem(pkcs8, "EC PRIVATE KEY"),
        root_cert=ca.public_bytes(serialization.Encoding.PEM).decode(),
    )


# --- PodSecurity `restricted` (pod-security.kubernetes.io, baseline + restricted) ----------

RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every way the pod breaks the `restricted` profile; empty when it is admitted."""
    spec: dict[str, Any] = pod["spec"]
    pod_sc: dict[str, Any] = spec.get("securityContext") or {}
    found: list[str] = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            found.append(f"spec.{host}")
    if pod_sc.get("sysctls"):
        found.append("spec.securityContext.sysctls")
    if pod_sc.get("runAsUser") == 0:
        found.append("spec.securityContext.runAsUser is 0")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume.get('name')}: type {sorted(kinds)}")
    containers = [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]
    if not containers:
        found.append("no containers")
    for container in containers:
        name = container.get("name")
        sc: dict[str, Any] = container.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        # Unset is allowed: runAsNonRoot then has the kubelet refuse an image user of root.
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0):
            found.append(f"{name}: runAsUser {uid!r} is not a non-zero id")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            found.append(f"{name}: seccompProfile {seccomp!r}")
        if sc.get("procMount") not in (None, "Default"):
            found.append(f"{name}: procMount")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{name}: hostPort")
    return found
