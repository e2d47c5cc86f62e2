"""Where the API server is and how k8scc proves who it is: a kubeconfig file's current context,
or the pod's ServiceAccount. This module reads and checks the files; transport.py does the HTTP.

Supported in a kubeconfig: server (with a path prefix), certificate-authority(-data),
insecure-skip-tls-verify, tls-server-name; token, tokenFile, client-certificate(-data) with
client-key(-data), and exec credential plugins. `auth-provider` and basic auth were removed from
Kubernetes clients and are refused with a line saying so.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from k8scc.errors import K8sccError
from k8scc.record import field, record


@record
class ExecPlugin:
    """A client-go exec credential plugin (client.authentication.k8s.io)."""

    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    api_version: str


@record
class Credentials:
    server: str
    namespace: str | None = None
    ca_pem: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    exec_plugin: ExecPlugin | None = None


def in_cluster(account_dir: Path, server: str) -> Credentials:
    """The pod's ServiceAccount: its token file (re-read per request, as bound tokens rotate),
    its CA and its namespace."""
    token_file = account_dir / "token"
    if not token_file.is_file():
        raise K8sccError(f"no kubeconfig configured and no ServiceAccount token at {token_file}")
    namespace_file = account_dir / "namespace"
    return Credentials(
        server=server,
        namespace=_text(namespace_file).strip() if namespace_file.is_file() else None,
        ca_pem=_text(account_dir / "ca.crt"),
        token_file=token_file,
    )


def from_file(path: Path) -> Credentials:
    """The current context of a kubeconfig file. Relative file names in it are relative to the
    file's directory, as for kubectl."""
    # Imported here: a peer in a pod has its ServiceAccount's files and no kubeconfig.
    from k8scc import yamltext  # noqa: PLC0415

    where = f"kubeconfig {path}"
    document = yamltext.load(_text(path), where)
    top = _mapping(document, where)
    current = top.get("current-context")
    if not isinstance(current, str) or not current:
        raise K8sccError(f"{where}: no current-context")
    context = _named(top, "contexts", "context", current, where)
    cluster = _named(top, "clusters", "cluster", _field(context, "cluster", where), where)
    user_name = context.get("user")
    user = _named(top, "users", "user", user_name, where) if user_name else {}
    base = path.parent
    server = _field(cluster, "server", where)
    if not server.startswith("https://"):
        raise K8sccError(f"{where}: server {server!r} is not an https:// URL")
    for refused in ("auth-provider", "username", "password"):
        if refused in user:
            raise K8sccError(
                f"{where}: user {user_name!r} uses {refused}, which k8scc does not support"
                " (use a token, a client certificate or an exec plugin)"
            )
    namespace = context.get("namespace")
    return Credentials(
        server=server.rstrip("/"),
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        ca_pem=_pem(cluster, "certificate-authority", base, where),
        insecure=cluster.get("insecure-skip-tls-verify") is True,
        tls_server_name=_optional(cluster, "tls-server-name", where),
        client_cert_pem=_pem(user, "client-certificate", base, where),
        client_key_pem=_pem(user, "client-key", base, where),
        token=_optional(user, "token", where),
        token_file=_path(user, "tokenFile", base, where),
        exec_plugin=_exec_plugin(user.get("exec"), base, where),
    )


# -- reading -------------------------------------------------------------------------------------


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise K8sccError(f"cannot read {path}: {error.strerror or error}") from None


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise K8sccError(f"{where}: expected a mapping")
    return value


def _field(section: dict[str, Any], key: str, where: str) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value:
        raise K8sccError(f"{where}: {key} is missing")
    return value


def _optional(section: dict[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise K8sccError(f"{where}: {key} must be a string")
    return value


def _named(
    top: dict[str, Any], plural: str, singular: str, name: str, where: str
) -> dict[str, Any]:
    for entry in top.get(plural) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return _mapping(entry.get(singular) or {}, f"{where}: {singular} {name!r}")
    raise K8sccError(f"{where}: no {singular} named {name!r}")


def _path(section: dict[str, Any], key: str, base: Path, where: str) -> Path | None:
    value = _optional(section, key, where)
    return None if value is None else base / Path(value).expanduser()


def _pem(section: dict[str, Any], key: str, base: Path, where: str) -> str | None:
    """`key-data` (base64 PEM) or the file `key` names."""
    data = _optional(section, f"{key}-data", where)
    if data is not None:
        try:
            return base64.b64decode(data, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise K8sccError(f"{where}: {key}-data is not base64 of a PEM file") from None
    path = _path(section, key, base, where)
    return None if path is None else _text(path)


def _exec_plugin(value: Any, base: Path, where: str) -> ExecPlugin | None:
    if value is None:
        return None
    section = _mapping(value, f"{where}: exec")
    command = _field(section, "command", f"{where}: exec")
    # A command with a slash is relative to the kubeconfig's directory; a bare name is on PATH.
    if "/" in command and not command.startswith("/"):
        command = str(base / command)
    args = section.get("args") or []
    env = section.get("env") or []
    if not all(isinstance(arg, str) for arg in args):
        raise K8sccError(f"{where}: exec.args must be strings")
    pairs = []
    for item in env:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise K8sccError(f"{where}: exec.env entries need a name and a value")
        pairs.append((item["name"], str(item.get("value", ""))))
    return ExecPlugin(
        command=command,
        args=tuple(args),
        env=tuple(pairs),
        api_version=_optional(section, "apiVersion", where) or "client.authentication.k8s.io/v1",
    )
