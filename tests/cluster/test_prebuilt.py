"""Packages of type `k8s` on the real node: an image built here and named by its digest is
recorded by build with no pod, launched by run with its own entrypoint as its own non-root user
under PodSecurity `restricted`, registers with the peer, gets its rule's settings, and leaves
nothing once stopped; a digest the node does not hold fails the launch in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from k8scc import buildinfo, names
from testbed.cluster import Testbed
from tests.cluster.test_failures import CHAINCODE_ID, error_lines, launch, write_chaincode_json
from tests.cluster.test_rules import pod_exec, process_environment
from tests.cluster.test_steps import wait_clean
from tests.support.builder import Builder, apply_rbac, make_builder
from tests.support.fakepeer import FakePeer
from tests.support.images import REPOSITORY, chaincode_image

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

PEER_ID = "peer0.org1.example.com"
RULES = [
    {
        "match": {"label": "asset_*"},
        "chaincode": {"env": {"REGION": "eu"}, "resources": {"limits": {"memory": "150Mi"}}},
    }
]


@pytest.fixture(scope="module")
def digested(testbed: Testbed, golang_output: Path) -> str:
    return testbed.real_node.load(chaincode_image(golang_output / "output" / "chaincode"))


def k8s_package(workdir: Path, image: dict[str, str]) -> tuple[Path, Path]:
    source, metadata = workdir / "src", workdir / "meta"
    source.mkdir(parents=True)
    metadata.mkdir()
    (source / "image.json").write_text(json.dumps(image))
    (metadata / "metadata.json").write_text(json.dumps({"type": "k8s", "label": "asset_1.0"}))
    return source, metadata


def build(builder: Builder, workdir: Path, image: dict[str, str]) -> tuple[int, str, Path]:
    source, metadata = k8s_package(workdir, image)
    output = workdir / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    return built.returncode, built.stderr, output


def test_a_k8s_package_runs_its_image_by_digest_and_registers(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    digested: str,
) -> None:
    apply_rbac(testbed.control_plane, namespace)
    builder = make_builder(testbed, namespace, volume_dir, tmp_path, {"chaincodes": RULES})
    name, digest = digested.split("@")
    status, stderr, output = build(builder, tmp_path, {"name": name, "digest": digest})
    assert status == 0, stderr
    assert buildinfo.read(output).run_image == digested
    # Recorded, not built: no builder pod was made.
    assert "ccbuild-" not in stderr
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        run = launch(builder, output, tmp_path / "run", peer)
        try:
            assert peer.wait_registered(CHAINCODE_ID, 60), run.stderr
            pod_name = names.chaincode_name(PEER_ID, CHAINCODE_ID)
            pod = admin.get(Pod, pod_name, namespace=namespace)
            environment = process_environment(testbed, namespace, pod_name)
            status_lines = pod_exec(testbed, namespace, pod_name, "cat", "/proc/1/status")
        finally:
            run.stop()
    assert environment["CORE_PEER_ADDRESS"] == peer.address
    assert environment["REGION"] == "eu"
    [container] = pod.spec.containers  # type: ignore[union-attr]
    assert container.image == digested
    assert container.args is None and container.command is None
    assert container.resources.limits == {"memory": "150Mi"}  # type: ignore[union-attr]
    security = pod.spec.securityContext  # type: ignore[union-attr]
    assert security.runAsNonRoot is True and security.runAsUser is None  # type: ignore[union-attr]
    # The image's own user runs it.
    [uid_line] = [line for line in status_lines.decode().splitlines() if line.startswith("Uid:")]
    assert uid_line.split()[1:] == ["1000"] * 4, uid_line
    assert "asset-transfer: starting go chaincode" in run.stderr
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_a_tag_instead_of_a_digest_fails_the_build_in_one_line(
    builder: Builder, admin: Client, namespace: str, tmp_path: Path
) -> None:
    status, stderr, output = build(builder, tmp_path, {"name": REPOSITORY, "tag": "1.0"})
    assert status == 1
    [error] = error_lines(stderr)
    assert "image.json: field 'digest' is missing" in error, error
    assert list(output.iterdir()) == []
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_a_digest_the_node_does_not_hold_fails_the_launch_in_one_line(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    digested: str,
) -> None:
    apply_rbac(testbed.control_plane, namespace)
    # Never pull: the test bed has no registry; one that lacks the digest answers "not found",
    # which k8scc takes as stuck just as it takes this.
    extra = {"pod": {"imagePullPolicy": "Never"}}
    builder = make_builder(testbed, namespace, volume_dir, tmp_path, extra)
    missing = "sha256:" + "0" * 64
    assert not digested.endswith(missing)
    status, stderr, output = build(builder, tmp_path, {"name": REPOSITORY, "digest": missing})
    assert status == 0, stderr
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        meta = write_chaincode_json(tmp_path / "run", peer.chaincode_json(CHAINCODE_ID))
        ran = builder.run("run", output, meta, timeout=120)
    assert ran.returncode == 1
    [error] = error_lines(ran.stderr)
    assert "cannot start: ErrImageNeverPull" in error and missing in error, error
    assert wait_clean(admin, namespace, builder.transfer) == []
