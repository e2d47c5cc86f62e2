"""`k8scc render` prints exactly what a step would create, with Secret data redacted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from k8scc import names
from k8scc.buildinfo import BuildInfo

pytestmark = pytest.mark.unit

KEY = "-----BEGIN EC PRIVATE KEY-----\nMIGHAgEAsecretsecret\n-----END EC PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"


def k8scc(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8scc", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def test_render_build_prints_the_builder_pod(tmp_path: Path) -> None:
    config = tmp_path / "k8scc.yaml"
    config.write_text("peer: {id: peer0}\n")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "metadata.json").write_text(
        json.dumps({"type": "GOLANG", "label": "My_CC+1", "path": "example.com/cc"})
    )
    result = k8scc("render", "build", "--config", config, tmp_path, tmp_path / "meta")
    assert result.returncode == 0, result.stderr
    [pod] = yaml.safe_load_all(result.stdout)
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["name"].startswith("ccbuild-my-cc-1-")
    assert pod["spec"]["containers"][0]["image"] == "hyperledger/fabric-ccenv:3.1"


def test_render_run_prints_pod_and_redacted_secret(tmp_path: Path) -> None:
    config = tmp_path / "k8scc.yaml"
    config.write_text("peer: {id: peer0}\n")
    BuildInfo("node", "b:1", "r:1", "cc", "0").write(tmp_path)
    (tmp_path / "run").mkdir()
    chaincode = {
        "chaincode_id": f"cc:{'a' * 64}",
        "peer_address": "peer0:7052",
        "client_cert": CERT,
        "client_key": KEY,
        "root_cert": CERT,
        "mspid": "Org1MSP",
    }
    (tmp_path / "run" / "chaincode.json").write_text(json.dumps(chaincode))
    result = k8scc("render", "run", "--config", config, tmp_path, tmp_path / "run")
    assert result.returncode == 0, result.stderr
    pod, secret = yaml.safe_load_all(result.stdout)
    assert pod["spec"]["containers"][0]["image"] == "r:1"
    assert set(secret["data"].values()) == {"<redacted>"}
    assert "secretsecret" not in result.stdout


def test_render_of_an_unknown_type_is_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "k8scc.yaml"
    config.write_text("{}\n")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "metadata.json").write_text(json.dumps({"type": "ccaas", "label": "x"}))
    result = k8scc("render", "build", "--config", config, tmp_path, tmp_path / "meta")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "ccaas" in result.stderr


def test_render_finds_the_peer_the_way_the_steps_do(tmp_path: Path) -> None:
    """No id in k8scc.yaml: the steps take CORE_PEER_ID, so render must too. The owner lookup
    needs credentials this machine lacks; render says so instead of pretending."""
    config = tmp_path / "k8scc.yaml"
    config.write_text("{}\n")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "metadata.json").write_text(
        json.dumps({"type": "GOLANG", "label": "cc_1", "path": "example.com/cc"})
    )
    result = k8scc(
        "render",
        "build",
        "--config",
        config,
        tmp_path,
        tmp_path / "meta",
        env={"CORE_PEER_ID": "peer7.org3"},
    )
    assert result.returncode == 0, result.stderr
    [pod] = yaml.safe_load_all(result.stdout)
    assert pod["metadata"]["labels"][names.LABEL_PEER] == names.peer_key("peer7.org3")
    assert "ownerReferences" not in pod["metadata"]
    assert result.stdout.startswith("# owner: not looked up: cannot load Kubernetes credentials")
