"""Driving k8scc exactly as the peer does: a builder directory made by `k8scc install-builder`,
its bin/* programs run with positional arguments and the peer's pruned environment, as the
ServiceAccount from the repo's RBAC manifest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.cluster import Testbed
from testbed.controlplane import ControlPlane
from testbed.k8scc_setup import install_builder, rbac_documents

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "chaincode"
SAMPLE_PATHS = {"golang": "k8scc.test/samples/chaincode/go", "node": "", "java": ""}
SAMPLE_DIRS = {"golang": "go", "node": "node", "java": "java"}


def apply_rbac(
    control_plane: ControlPlane, namespace: str, rules: list[dict[str, Any]] | None = None
) -> None:
    """The manifest's ServiceAccount, Role and RoleBinding; `rules` replaces the Role's rules."""
    control_plane.create_objects(namespace, rbac_documents(rules))


def transfer_volume(control_plane: ControlPlane, namespace: str, directory: Path) -> Path:
    """`directory`, made writable for every pod user, behind the PVC `transfer` of `namespace`."""
    directory.mkdir(exist_ok=True)
    directory.chmod(0o777)
    control_plane.create_local_volume(namespace, "transfer", directory)
    return directory


def rbac_rules() -> list[dict[str, Any]]:
    [role] = [d for d in rbac_documents() if d["kind"] == "Role"]
    return list(role["rules"])


def peer_env() -> dict[str, str]:
    """What the peer passes: only PATH and TMPDIR survive its pruning here."""
    return {k: os.environ[k] for k in ("PATH", "TMPDIR") if k in os.environ}


@dataclass
class Builder:
    directory: Path
    transfer: Path
    env: dict[str, str] = field(default_factory=peer_env)

    def program(self, step: str) -> str:
        return str(self.directory / "bin" / step)

    def run(self, step: str, *args: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.program(step), *map(str, args)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, step: str, *args: Path) -> RunningStep:
        return RunningStep(
            subprocess.Popen(
                [self.program(step), *map(str, args)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )


class RunningStep:
    """A step in the background whose stderr lines are collected as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signals the step and waits for it; kills it if it outlives `timeout`."""
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=5)
        return code


def make_builder(
    testbed: Testbed,
    namespace: str,
    transfer: Path,
    workdir: Path,
    extra: dict[str, Any] | None = None,
    account: str = "k8scc",
    peer_namespace: str | None = None,
) -> Builder:
    """Given `peer_namespace`, the credentials are those of a peer in a pod of that namespace
    (its ServiceAccount's files and the API server's address) instead of a kubeconfig."""
    control_plane = testbed.control_plane
    if peer_namespace is not None:
        account_dir = control_plane.write_incluster_dir(namespace, account, workdir / "account")
        (account_dir / "namespace").write_text(peer_namespace)
        credentials = {
            "serviceAccountDir": str(account_dir),
            "kubernetesServer": control_plane.server,
        }
    else:
        path = control_plane.serviceaccount_kubeconfig(
            namespace, account, workdir / "k8scc.kubeconfig"
        )
        credentials = {"kubeconfig": str(path)}
    config: dict[str, Any] = {
        "namespace": namespace,
        **credentials,
        "peer": {"id": "peer0.org1.example.com"},
        "transfer": {"claimName": "transfer", "mountPath": str(transfer)},
        "timeouts": {"stuck": "5s", "start": "60s"},
        **testbed.build_settings(namespace),
    }
    config.update(extra or {})
    config = {key: value for key, value in config.items() if value is not None}
    directory = install_builder(workdir / "builder", config)
    return Builder(directory, transfer)


def small_node_package(
    workdir: Path, label: str = "asset_1.0", scripts: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """A node package without dependencies, for tests of what k8scc does around a build
    (permissions, concurrency, restarts) rather than of the build itself: npm has nothing to
    download. It carries package-label.txt, which says which package it is."""
    source = workdir / "src-dir" / "src"
    source.mkdir(parents=True)
    manifest = {
        "name": "small",
        "version": "1.0.0",
        "scripts": {"start": "node index.js", **(scripts or {})},
    }
    (source / "package.json").write_text(json.dumps(manifest))
    (source / "index.js").write_text("console.log('small');\n")
    (source / "package-label.txt").write_text(label)
    metadata = workdir / "metadata"
    metadata.mkdir()
    (metadata / "metadata.json").write_text(
        json.dumps({"path": "", "type": "node", "label": label})
    )
    return source.parent, metadata


def package_source(platform: str, workdir: Path, label: str = "asset_1.0") -> tuple[Path, Path]:
    """CHAINCODE_SOURCE_DIR and CHAINCODE_METADATA_DIR as the peer extracts a sample package."""
    sample = SAMPLES / SAMPLE_DIRS[platform]
    source = workdir / "src-dir"
    shutil.copytree(
        sample, source / "src", ignore=shutil.ignore_patterns("META-INF", "node_modules", "target")
    )
    if (sample / "META-INF").is_dir():
        shutil.copytree(sample / "META-INF", source / "META-INF")
    metadata = workdir / "metadata"
    metadata.mkdir()
    (metadata / "metadata.json").write_text(
        json.dumps({"path": SAMPLE_PATHS[platform], "type": platform, "label": label})
    )
    return source, metadata
