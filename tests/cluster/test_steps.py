"""All four steps invoked exactly as the peer invokes them, against the test bed, for each
platform: a real build in a builder pod, then launches with peer TLS on and off that register
at a fake peer, stopped with SIGTERM, leaving nothing behind."""

from __future__ import annotations

import json
import platform as host_platform
import time
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod, Secret

from k8scc.buildinfo import ARCHITECTURES
from k8scc.render import ARCH_FILE
from k8scc.transfer import OUTPUT, OUTPUT_ARCHIVE
from testbed.cluster import Testbed
from tests.support.builder import (
    Builder,
    apply_rbac,
    make_builder,
    package_source,
    small_node_package,
)
from tests.support.fakepeer import FakePeer

pytestmark = [pytest.mark.cluster]

BUILT_FILE = {"golang": "chaincode", "node": "package.json", "java": "chaincode.jar"}


def leftovers(admin: Client, namespace: str, transfer: Path | None) -> list[str]:
    pods = [f"pod/{p.metadata.name}" for p in admin.list(Pod, namespace=namespace)]  # type: ignore[union-attr]
    secrets = [f"secret/{s.metadata.name}" for s in admin.list(Secret, namespace=namespace)]  # type: ignore[union-attr]
    directories = [f"dir/{d.name}" for d in transfer.iterdir()] if transfer else []
    return pods + secrets + directories


def wait_clean(
    admin: Client, namespace: str, transfer: Path | None, timeout: float = 10
) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := leftovers(admin, namespace, transfer)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def launch_and_stop(
    builder: Builder, output: Path, workdir: Path, platform: str, tls: bool, host: str
) -> None:
    with FakePeer(tls=tls, host=host) as peer:
        chaincode_id = f"asset_1.0:{'ab' * 32}"
        run_meta = workdir / f"run-{tls}"
        run_meta.mkdir()
        (run_meta / "chaincode.json").write_text(json.dumps(peer.chaincode_json(chaincode_id)))
        run = builder.start("run", output, run_meta)
        try:
            assert peer.wait_registered(chaincode_id, timeout=120), run.stderr
            # The chaincode's own output streams into the peer's log while it runs.
            started = f"| asset-transfer: starting {'go' if platform == 'golang' else platform}"
            assert run.wait_for_line(started, 30), run.stderr
            assert run.process.poll() is None
        finally:
            stopping = time.monotonic()
            code = run.stop()
        assert time.monotonic() - stopping < 5
        assert code != 0
        assert "stopped by SIGTERM" in run.stderr


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "platform", ["golang", "node", pytest.param("java", marks=pytest.mark.podsecurity("baseline"))]
)
def test_build_release_and_run_with_tls_on_and_off(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    platform: str,
) -> None:
    source, metadata = package_source(platform, tmp_path)
    detected = builder.run("detect", source, metadata)
    assert detected.returncode == 0, detected.stderr
    output = tmp_path / "bld"
    output.mkdir()
    started = time.monotonic()
    built = builder.run("build", source, metadata, output)
    print(f"{platform} build: {time.monotonic() - started:.1f} s")
    assert built.returncode == 0, built.stderr
    assert (output / "output" / BUILT_FILE[platform]).is_file()
    info = json.loads((output / "k8scc-build.json").read_text())
    assert info["platform"] == platform
    # The builder node's architecture is recorded, and its note kept out of the output.
    assert info["architecture"] == ARCHITECTURES[host_platform.machine()]
    assert not (output / "output" / ARCH_FILE).exists()
    assert "build succeeded" in built.stderr
    release = tmp_path / "release"
    release.mkdir()
    released = builder.run("release", output, release)
    assert released.returncode == 0, released.stderr
    assert (release / "statedb" / "couchdb" / "indexes" / "indexOwner.json").is_file()
    assert wait_clean(admin, namespace, builder.transfer) == []

    for tls in (True, False):
        started = time.monotonic()
        launch_and_stop(builder, output, tmp_path, platform, tls, testbed.host_address)
        print(f"{platform} launch tls={tls}: {time.monotonic() - started:.1f} s")
        assert wait_clean(admin, namespace, builder.transfer) == []


@pytest.mark.timeout(600)
def test_a_build_made_through_the_api_launches_with_the_volume(
    testbed: Testbed, builder: Builder, admin: Client, namespace: str, tmp_path: Path
) -> None:
    """Going back from transfer.mode api to the volume: the one archive the build kept is
    unpacked onto the volume, and the chaincode runs from there."""
    (tmp_path / "api").mkdir()
    through_api = make_builder(
        testbed, namespace, builder.transfer, tmp_path / "api", {"transfer": {"mode": "api"}}
    )
    source, metadata = package_source("node", tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    built = through_api.run("build", source, metadata, output)
    assert built.returncode == 0, built.stderr
    assert (output / OUTPUT_ARCHIVE).is_file()
    assert not (output / OUTPUT).exists()
    launch_and_stop(builder, output, tmp_path, "node", True, testbed.host_address)
    assert wait_clean(admin, namespace, builder.transfer) == []


@pytest.mark.timeout(300)
def test_incluster_credentials_work_without_the_service_environment(
    testbed: Testbed, admin: Client, namespace: str, volume_dir: Path, tmp_path: Path
) -> None:
    """The peer prunes KUBERNETES_SERVICE_HOST/PORT unless propagated: the ServiceAccount
    directory plus the configured API address must be enough."""
    apply_rbac(testbed.control_plane, namespace)
    account = testbed.control_plane.write_incluster_dir(namespace, "k8scc", tmp_path / "sa")
    builder = make_builder(
        testbed,
        namespace,
        volume_dir,
        tmp_path,
        {
            "kubeconfig": None,
            "namespace": None,  # from the ServiceAccount directory
            "serviceAccountDir": str(account),
            "kubernetesServer": testbed.control_plane.server,
        },
    )
    assert "KUBERNETES_SERVICE_HOST" not in builder.env
    source, metadata = small_node_package(tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode == 0, built.stderr
    assert (output / "output" / "package.json").is_file()
    assert wait_clean(admin, namespace, builder.transfer) == []
