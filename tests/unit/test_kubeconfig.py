"""Reading a kubeconfig's current context, and which request failures are worth retrying."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8scc import kubeconfig
from k8scc.errors import K8sccError
from k8scc.http1 import ProtocolError
from k8scc.transport import ApiError, describe, unavailable

pytestmark = pytest.mark.unit


def write(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], **top: Any) -> Path:
    document = {
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        "current-context": "x",
        **top,
    }
    path = tmp_path / "conf" / "kubeconfig"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def test_relative_file_names_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"server": "https://api.example:6443/prefix/", "certificate-authority": "ca.pem"},
        {"client-certificate": "me.crt", "client-key": "me.key", "tokenFile": "tok"},
    )
    for name, text in (("ca.pem", "CA"), ("me.crt", "CERT"), ("me.key", "KEY")):
        (path.parent / name).write_text(text)
    read = kubeconfig.from_file(path)
    assert read.server == "https://api.example:6443/prefix"
    assert (read.ca_pem, read.client_cert_pem, read.client_key_pem) == ("CA", "CERT", "KEY")
    assert read.token_file == path.parent / "tok"
    assert read.namespace == "ns"


def test_inline_data_is_decoded(tmp_path: Path) -> None:
    data = base64.b64encode(b"PEM TEXT").decode()
    path = write(
        tmp_path,
        {"server": "https://a", "certificate-authority-data": data},
        {"token": "abc"},
    )
    read = kubeconfig.from_file(path)
    assert read.ca_pem == "PEM TEXT"
    assert read.token == "abc"  # noqa: S105 - a made-up token
    assert "abc" not in repr(read)


def test_an_exec_plugin_is_read_with_its_environment(tmp_path: Path) -> None:
    exec_section = {
        "command": "./bin/get-token",
        "args": ["--cluster", "c"],
        "env": [{"name": "REGION", "value": "eu"}],
    }
    read = kubeconfig.from_file(write(tmp_path, {"server": "https://a"}, {"exec": exec_section}))
    assert read.exec_plugin == kubeconfig.ExecPlugin(
        command=str(tmp_path / "conf" / "bin" / "get-token"),
        args=("--cluster", "c"),
        env=(("REGION", "eu"),),
        api_version="client.authentication.k8s.io/v1",
    )


@pytest.mark.parametrize(
    ("cluster", "user", "top", "message"),
    [
        ({"server": "https://a"}, {}, {"current-context": ""}, "no current-context"),
        ({"server": "https://a"}, {}, {"current-context": "y"}, "no context named 'y'"),
        ({}, {}, {}, "server is missing"),
        ({"server": "http://a"}, {}, {}, "server 'http://a' is not an https:// URL"),
        ({"server": "https://a"}, {"auth-provider": {"name": "gcp"}}, {}, "uses auth-provider"),
        ({"server": "https://a"}, {"username": "x"}, {}, "uses username"),
        ({"server": "https://a"}, {"client-key-data": "%%"}, {}, "client-key-data is not base64"),
        ({"server": "https://a"}, {"client-key": "missing.key"}, {}, "missing.key: No such file"),
        ({"server": "https://a"}, {"exec": {"args": []}}, {}, "exec: command is missing"),
    ],
)
def test_a_bad_kubeconfig_is_one_line_naming_the_file(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], top: dict[str, Any], message: str
) -> None:
    path = write(tmp_path, cluster, user, **top)
    with pytest.raises(K8sccError) as raised:
        kubeconfig.from_file(path)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_kubeconfig_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("clusters: [\n")
    with pytest.raises(K8sccError, match=f"^kubeconfig {path}: not valid YAML at line 2: [^\n]*$"):
        kubeconfig.from_file(path)


def test_in_cluster_needs_the_token(tmp_path: Path) -> None:
    with pytest.raises(K8sccError, match="no ServiceAccount token at"):
        kubeconfig.in_cluster(tmp_path, "https://kubernetes.default.svc")


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("timed out"), True),
        (ProtocolError("the connection ended in the middle of an answer"), True),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), True),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), False),
        (ApiError(503, "unavailable"), True),
        (ApiError(429, "slow down"), True),
        (ApiError(403, "forbidden"), False),
        (ApiError(422, "invalid"), False),
    ],
)
def test_only_transient_failures_are_retried(error: Exception, retried: bool) -> None:
    assert unavailable(error) is retried


def test_a_failure_is_described_in_one_line() -> None:
    assert describe(ApiError(403, 'pods is forbidden: User "x"')) == 'pods is forbidden: User "x"'
    assert describe(ConnectionRefusedError(111, "Connection\nrefused")) == (
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
