"""Chaincode TLS files and environment as Fabric's Docker launcher provides them.

The shims disagree on which files they read (Go prefers the raw-PEM ``*_FILE`` files,
Node and Java use only the base64 ``*_PATH`` files), so a launcher has to write both.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path


def launcher_env(chaincode: Mapping[str, str], tls_dir: Path) -> dict[str, str]:
    """The CORE_* environment for one launch described by chaincode.json content.

    With TLS on, the files the variables name are written to tls_dir (created if missing).
    """
    env = {
        "CORE_CHAINCODE_ID_NAME": chaincode["chaincode_id"],
        "CORE_PEER_LOCALMSPID": chaincode["mspid"],
    }
    if not chaincode["client_cert"]:
        env["CORE_PEER_TLS_ENABLED"] = "false"
        return env

    key, cert = chaincode["client_key"], chaincode["client_cert"]
    files = {
        # base64 of the PEM text: the historical format of client.key/client.crt
        "client.key": base64.b64encode(key.encode()).decode(),
        "client.crt": base64.b64encode(cert.encode()).decode(),
        "client_pem.key": key,
        "client_pem.crt": cert,
        "peer.crt": chaincode["root_cert"],
    }
    tls_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = tls_dir / name
        path.write_text(content)
        path.chmod(0o644)
    env.update(
        {
            "CORE_PEER_TLS_ENABLED": "true",
            "CORE_TLS_CLIENT_KEY_PATH": str(tls_dir / "client.key"),
            "CORE_TLS_CLIENT_CERT_PATH": str(tls_dir / "client.crt"),
            "CORE_TLS_CLIENT_KEY_FILE": str(tls_dir / "client_pem.key"),
            "CORE_TLS_CLIENT_CERT_FILE": str(tls_dir / "client_pem.crt"),
            "CORE_PEER_TLS_ROOTCERT_FILE": str(tls_dir / "peer.crt"),
        }
    )
    return env
