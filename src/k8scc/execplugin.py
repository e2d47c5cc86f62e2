"""Running a kubeconfig's exec credential plugin (client.authentication.k8s.io) and knowing
when to run it again. Apart from kubeconfig.py because few peers use one: transport.py loads
this module, and subprocess with it, only for those."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from k8scc.errors import K8sccError
from k8scc.kubeconfig import ExecPlugin
from k8scc.record import record

EXEC_TIMEOUT_SECONDS = 60.0
# Plugins return short-lived credentials; renewing a little early avoids a request racing expiry.
EXEC_RENEW_SECONDS = 30.0


@record
class ExecCredential:
    token: str | None
    client_cert_pem: str | None
    client_key_pem: str | None
    # time.time() after which the plugin runs again; None: valid for this process' life.
    expires: float | None


def run(plugin: ExecPlugin, environ: Mapping[str, str] = os.environ) -> ExecCredential:
    """Runs the plugin and reads the ExecCredential it prints. It gets no terminal: k8scc runs
    under the peer, so an interactive login cannot happen."""
    info = {
        "apiVersion": plugin.api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    env = {**environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
    what = f"exec credential plugin {plugin.command}"
    try:
        done = subprocess.run(
            [plugin.command, *plugin.args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=EXEC_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise K8sccError(f"{what} did not run: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
        raise K8sccError(f"{what} exited with {done.returncode}: {last}")
    try:
        status = json.loads(done.stdout)["status"]
        token = status.get("token")
        cert = status.get("clientCertificateData")
        key = status.get("clientKeyData")
        expiry = status.get("expirationTimestamp")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise K8sccError(f"{what} printed no ExecCredential with a status") from None
    if not token and not (cert and key):
        raise K8sccError(f"{what} returned neither a token nor a client certificate and key")
    return ExecCredential(
        token=token or None,
        client_cert_pem=cert or None,
        client_key_pem=key or None,
        expires=_expiry(expiry, what) if expiry else None,
    )


def renew_at(credential: ExecCredential) -> float:
    """When to run the plugin again."""
    if credential.expires is None:
        return float("inf")
    return credential.expires - EXEC_RENEW_SECONDS


def _expiry(stamp: Any, what: str) -> float:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise K8sccError(f"{what}: expirationTimestamp {stamp!r} is not RFC 3339") from None
