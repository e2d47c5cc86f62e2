"""k8scc set up against the test bed exactly as an operator would: the ServiceAccount of
deploy/base and the Role of deploy/chaincode, an in-cluster credentials directory, a builder
directory written by `k8scc install-builder` with its k8scc.yaml beside bin/, and a Fabric peer
whose core.yaml lists that directory as an external builder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from k8scc import coreyaml
from testbed.cluster import Testbed
from testbed.fabric import PEER_ID, FabricNetwork

REPO = Path(__file__).resolve().parent.parent
ACCOUNT_FILE = REPO / "deploy" / "base" / "serviceaccount.yaml"
RBAC = REPO / "deploy" / "chaincode" / "rbac.yaml"
ACCOUNT = "k8scc"


def rbac_documents(rules: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The ServiceAccount, Role and RoleBinding of the manifests, for one namespace: the
    binding's subject is the account in the binding's own namespace. `rules`, when given,
    replaces the Role's rules."""
    documents = [yaml.safe_load(ACCOUNT_FILE.read_text())]
    for document in yaml.safe_load_all(RBAC.read_text()):
        if document["kind"] == "Role" and rules is not None:
            document["rules"] = rules
        if document["kind"] == "RoleBinding":
            for subject in document["subjects"]:
                del subject["namespace"]
        documents.append(document)
    return documents


def install_builder(directory: Path, config: dict[str, Any]) -> Path:
    config_file = directory.parent / f"{directory.name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    subprocess.run(
        [sys.executable, "-m", "k8scc", "install-builder", str(directory), "--config", config_file],
        check=True,
        capture_output=True,
    )
    return directory


def k8scc_network(
    testbed: Testbed,
    namespace: str,
    transfer_dir: Path,
    workdir: Path,
    version: str = "3.1",
    peer_tls: bool = True,
    extra: dict[str, Any] | None = None,
) -> FabricNetwork:
    """A Fabric network (not started yet) whose peer builds and runs chaincode through k8scc in
    `namespace`, where the PVC `transfer` is bound to `transfer_dir`; `extra` adds to or
    replaces top-level keys of k8scc.yaml."""
    control_plane = testbed.control_plane
    control_plane.create_objects(namespace, rbac_documents())
    account = control_plane.write_incluster_dir(namespace, ACCOUNT, workdir / "serviceaccount")
    builder = install_builder(
        workdir / "k8scc",
        {
            "fabricVersion": version,
            "serviceAccountDir": str(account),
            "kubernetesServer": control_plane.server,
            "transfer": {"claimName": "transfer", "mountPath": str(transfer_dir)},
            "timeouts": {"stuck": "10s", "start": "120s"},
            **testbed.build_settings(namespace),
            **(extra or {}),
        },
    )
    # The entry `k8scc core-yaml` writes; of the names it propagates, this peer's environment
    # holds only CORE_PEER_ID.
    builders = [coreyaml.builder_entry(builder)]
    return FabricNetwork(
        workdir / "fabric",
        version,
        builders,
        peer_tls=peer_tls,
        peer_env={"CORE_PEER_ID": PEER_ID},
        chaincode_host=testbed.host_address,
    )
