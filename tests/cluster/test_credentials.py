"""Every way k8scc can prove who it is, tried against the test bed's API server: the answer to
"who am I" (SelfSubjectReview) shows which identity the request carried."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8scc import config as configuration
from k8scc.errors import K8sccError
from k8scc.kube import Kube
from testbed.cluster import Testbed
from tests.support.builder import apply_rbac

pytestmark = pytest.mark.cluster


def kube_for(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], **context: str) -> Kube:
    """A Kube reading a kubeconfig made of `cluster` and `user`."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bed", "cluster": cluster}],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "here", "context": {"cluster": "bed", "user": "me", **context}}],
        "current-context": "here",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(document))
    return Kube.connect(configuration.parse(yaml.safe_dump({"kubeconfig": str(path)})))


def pki(testbed: Testbed) -> Path:
    return testbed.control_plane.ca_file.parent


def with_ca(testbed: Testbed, **more: Any) -> dict[str, Any]:
    return {
        "server": testbed.control_plane.server,
        "certificate-authority": str(testbed.control_plane.ca_file),
        **more,
    }


def admin_files(testbed: Testbed) -> dict[str, str]:
    return {
        "client-certificate": str(pki(testbed) / "admin.crt"),
        "client-key": str(pki(testbed) / "admin.key"),
    }


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def plugin(tmp_path: Path, status: dict[str, Any], code: int = 0) -> dict[str, Any]:
    """An exec credential plugin that counts its runs in `runs` and prints `status`."""
    script = tmp_path / "plugin.py"
    runs = tmp_path / "runs"
    script.write_text(
        "import json, os, sys\n"
        f"open({str(runs)!r}, 'a').write(os.environ['KUBERNETES_EXEC_INFO'] + '\\n')\n"
        f"print(json.dumps({{'apiVersion': 'client.authentication.k8s.io/v1',"
        f" 'kind': 'ExecCredential', 'status': {status!r}}}))\n"
        f"sys.stderr.write('first line\\nlogin required\\n')\n"
        f"sys.exit({code})\n"
    )
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script)],
            "interactiveMode": "Never",
        }
    }


def runs(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "runs"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_client_certificate_files_authenticate(testbed: Testbed, tmp_path: Path) -> None:
    kube = kube_for(tmp_path, with_ca(testbed), admin_files(testbed))
    assert kube.whoami() == "admin"
    assert kube.namespace == "default"


def test_inline_certificate_authority_certificate_and_key_authenticate(
    testbed: Testbed, tmp_path: Path
) -> None:
    cluster = {
        "server": testbed.control_plane.server,
        "certificate-authority-data": b64(testbed.control_plane.ca_file),
    }
    user = {
        "client-certificate-data": b64(pki(testbed) / "admin.crt"),
        "client-key-data": b64(pki(testbed) / "admin.key"),
    }
    assert kube_for(tmp_path, cluster, user, namespace="elsewhere").whoami() == "admin"
    assert kube_for(tmp_path, cluster, user, namespace="elsewhere").namespace == "elsewhere"


def test_a_token_file_is_read_again_for_every_request(
    testbed: Testbed, namespace: str, tmp_path: Path
) -> None:
    apply_rbac(testbed.control_plane, namespace)
    token = tmp_path / "token"
    token.write_text(testbed.control_plane.token(namespace, "k8scc") + "\n")
    kube = kube_for(tmp_path, with_ca(testbed), {"tokenFile": str(token)})
    assert kube.whoami() == f"system:serviceaccount:{namespace}:k8scc"
    token.write_text(testbed.control_plane.token(namespace, "default"))
    assert kube.whoami() == f"system:serviceaccount:{namespace}:default"


def test_an_exec_plugin_token_is_reused_until_it_nears_expiry(
    testbed: Testbed, namespace: str, tmp_path: Path
) -> None:
    apply_rbac(testbed.control_plane, namespace)
    token = testbed.control_plane.token(namespace, "k8scc")

    def token_plugin_kube(directory: Path, expiry: str) -> Kube:
        directory.mkdir()
        status = {"token": token, "expirationTimestamp": expiry}
        return kube_for(directory, with_ca(testbed), plugin(directory, status))

    lasting = tmp_path / "lasting"
    kube = token_plugin_kube(lasting, "2099-01-01T00:00:00Z")
    assert kube.whoami() == f"system:serviceaccount:{namespace}:k8scc"
    assert kube.whoami() == f"system:serviceaccount:{namespace}:k8scc"
    [info] = runs(lasting)
    assert info["spec"] == {"interactive": False}

    expiring = tmp_path / "expiring"
    kube = token_plugin_kube(expiring, "2000-01-01T00:00:00Z")
    kube.whoami()
    kube.whoami()
    assert len(runs(expiring)) == 2


def test_an_exec_plugin_may_return_a_client_certificate(testbed: Testbed, tmp_path: Path) -> None:
    status = {
        "clientCertificateData": (pki(testbed) / "admin.crt").read_text(),
        "clientKeyData": (pki(testbed) / "admin.key").read_text(),
    }
    assert kube_for(tmp_path, with_ca(testbed), plugin(tmp_path, status)).whoami() == "admin"


def test_a_failing_exec_plugin_is_one_line_with_its_last_words(
    testbed: Testbed, tmp_path: Path
) -> None:
    kube = kube_for(tmp_path, with_ca(testbed), plugin(tmp_path, {}, code=3))
    with pytest.raises(K8sccError) as raised:
        kube.whoami()
    assert (
        str(raised.value)
        == f"exec credential plugin {sys.executable} exited with 3: login required"
    )


def test_tls_server_name_is_the_name_checked_against_the_certificate(
    testbed: Testbed, tmp_path: Path
) -> None:
    named = kube_for(
        tmp_path, with_ca(testbed, **{"tls-server-name": "kubernetes"}), admin_files(testbed)
    )
    assert named.whoami() == "admin"
    wrong = kube_for(
        tmp_path, with_ca(testbed, **{"tls-server-name": "elsewhere.example"}), admin_files(testbed)
    )
    with pytest.raises(K8sccError, match=r"SSLCertVerificationError.*elsewhere\.example"):
        wrong.whoami()


def test_insecure_skip_tls_verify_needs_no_authority(testbed: Testbed, tmp_path: Path) -> None:
    cluster = {"server": testbed.control_plane.server, "insecure-skip-tls-verify": True}
    assert kube_for(tmp_path, cluster, admin_files(testbed)).whoami() == "admin"


def test_an_unknown_authority_is_refused(testbed: Testbed, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.crt"
    stranger.write_text((pki(testbed) / "admin.crt").read_text())
    kube = kube_for(
        tmp_path,
        {"server": testbed.control_plane.server, "certificate-authority": str(stranger)},
        admin_files(testbed),
    )
    with pytest.raises(K8sccError, match="certificate verify failed"):
        kube.whoami()


def test_in_cluster_credentials_without_a_ca_file_name_the_file(
    testbed: Testbed, namespace: str, tmp_path: Path
) -> None:
    apply_rbac(testbed.control_plane, namespace)
    account = testbed.control_plane.write_incluster_dir(namespace, "k8scc", tmp_path / "sa")
    settings = {"kubernetesServer": testbed.control_plane.server, "serviceAccountDir": str(account)}
    kube = Kube.connect(configuration.parse(yaml.safe_dump(settings)))
    assert kube.whoami() == f"system:serviceaccount:{namespace}:k8scc"
    assert kube.namespace == namespace
    (account / "ca.crt").unlink()
    with pytest.raises(K8sccError) as raised:
        Kube.connect(configuration.parse(yaml.safe_dump(settings)))
    assert str(raised.value) == (
        f"cannot load Kubernetes credentials: cannot read {account / 'ca.crt'}:"
        " No such file or directory"
    )
