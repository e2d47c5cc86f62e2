"""The peer image's install steps, run for real: images/peer/install.sh installs a wheel built
from this tree into a fresh virtual environment and builder directory and adds k8scc to a copy
of Fabric's sample core.yaml; the installed bin/detect and bin/build then work against the
test bed exactly as the peer runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uv
import yaml

from k8scc import config
from testbed import binaries
from testbed.cluster import Testbed
from testbed.fabric import fabric_module_dir
from tests.support.builder import REPO, apply_rbac, package_source, peer_env, small_node_package

pytestmark = pytest.mark.cluster

IMAGE = REPO / "images" / "peer"
PROPAGATED = [
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "K8SCC_CFGFILE",
    "CORE_PEER_ID",
    "K8SCC_PEER_POD_UID",
]


def install_sh(wheel: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(IMAGE / "install.sh"), str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@dataclass(frozen=True)
class Install:
    wheel: Path
    prefix: Path
    core: Path
    original_core: dict[str, Any]
    env: dict[str, str]

    def program(self, step: str) -> str:
        return str(self.prefix / "bin" / step)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """One wheel and one install per module: they are the slow part."""
    root = tmp_path_factory.mktemp("install")
    built = subprocess.run(
        [uv.find_uv_bin(), "build", "--wheel", "--out-dir", str(root / "dist")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (root / "dist").glob("k8scc-*.whl")
    fabric_cfg = root / "fabric"
    fabric_cfg.mkdir()
    sample = fabric_module_dir(binaries.FABRIC["3.1"]) / "sampleconfig" / "core.yaml"
    core = fabric_cfg / "core.yaml"
    core.write_text(sample.read_text())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("K8SCC_", "VIRTUAL_ENV"))},
        "K8SCC_PREFIX": str(root / "opt" / "k8scc"),
        "K8SCC_FABRIC_VERSION": "2.5",
        "FABRIC_CFG_PATH": str(fabric_cfg),
        "PYTHON": sys.executable,
    }
    install = Install(wheel, root / "opt" / "k8scc", core, yaml.safe_load(sample.read_text()), env)
    done = install_sh(wheel, env)
    assert done.returncode == 0, done.stderr
    return install


def test_install_lays_out_venv_builder_config_and_core_yaml(installed: Install) -> None:
    prefix = installed.prefix
    venv_python = prefix / "venv" / "bin" / "python"
    for step in ("detect", "build", "release", "run"):
        program = prefix / "bin" / step
        assert os.access(program, os.X_OK)
        # The peer runs bin/* with a pruned environment: the interpreter is named outright.
        assert program.read_text().splitlines()[0] == f"#!{venv_python}"
    located = subprocess.run(
        [str(venv_python), "-c", "import k8scc; print(k8scc.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(located.stdout.strip()).is_relative_to(prefix / "venv")

    installed_config = prefix / "k8scc.yaml"
    assert installed_config.read_text().startswith((IMAGE / "k8scc.yaml").read_text())
    settings = config.load(installed_config)
    assert settings.fabric_version == "2.5"
    assert settings.transfer_claim == "k8scc-transfer"
    assert settings.kubeconfig is None
    assert settings.platforms["golang"].build_image == "hyperledger/fabric-ccenv:2.5"

    core = yaml.safe_load(installed.core.read_text())
    [ccaas] = installed.original_core["chaincode"]["externalBuilders"]
    assert core["chaincode"]["externalBuilders"] == [
        ccaas,
        {"name": "k8scc", "path": str(prefix), "propagateEnvironment": PROPAGATED},
    ]
    core["chaincode"]["externalBuilders"] = [ccaas]
    assert core == installed.original_core


@pytest.mark.parametrize("missing", ["k8scc.whl", "core.yaml"])
def test_missing_input_stops_the_install_before_it_writes(
    installed: Install, tmp_path: Path, missing: str
) -> None:
    prefix = tmp_path / "opt"
    env = {**installed.env, "K8SCC_PREFIX": str(prefix), "FABRIC_CFG_PATH": str(tmp_path)}
    if missing != "core.yaml":
        shutil.copyfile(installed.core, tmp_path / "core.yaml")
    wheel = tmp_path / missing if missing.endswith(".whl") else installed.wheel
    done = install_sh(wheel, env)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("install.sh: error: ")
    assert f"{missing}: no such file" in line
    assert not prefix.exists()


def test_installed_detect_uses_the_image_config(installed: Install, tmp_path: Path) -> None:
    source, metadata = package_source("golang", tmp_path)
    env = peer_env()
    detected = subprocess.run(
        [installed.program("detect"), str(source), str(metadata)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert detected.returncode == 0, detected.stderr

    (metadata / "metadata.json").write_text(
        json.dumps({"type": "ccaas", "label": "asset_1.0", "path": ""})
    )
    rejected = subprocess.run(
        [installed.program("detect"), str(source), str(metadata)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert rejected.returncode == 1
    assert "type 'ccaas' is not one k8scc builds" in rejected.stderr


@pytest.mark.timeout(600)
def test_installed_build_runs_against_the_cluster(
    installed: Install, testbed: Testbed, namespace: str, volume_dir: Path, tmp_path: Path
) -> None:
    """The peer's core.yaml propagates K8SCC_CFGFILE: a config other than the image's one."""
    apply_rbac(testbed.control_plane, namespace)
    kubeconfig = testbed.control_plane.serviceaccount_kubeconfig(
        namespace, "k8scc", tmp_path / "k8scc.kubeconfig"
    )
    cluster_config = tmp_path / "cluster.yaml"
    cluster_config.write_text(
        yaml.safe_dump(
            {
                "namespace": namespace,
                "kubeconfig": str(kubeconfig),
                "peer": {"id": "peer0.org1.example.com"},
                "transfer": {"claimName": "transfer", "mountPath": str(volume_dir)},
                "timeouts": {"stuck": "5s", "start": "60s"},
                "buildEnv": {"HTTPS_PROXY": testbed.egress_proxy},
            }
        )
    )
    source, metadata = small_node_package(tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    built = subprocess.run(
        [installed.program("build"), str(source), str(metadata), str(output)],
        env={**peer_env(), "K8SCC_CFGFILE": str(cluster_config)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert "build succeeded" in built.stderr
    assert (output / "output" / "package.json").is_file()
    assert json.loads((output / "k8scc-build.json").read_text())["platform"] == "node"
