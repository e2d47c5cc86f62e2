"""k8scc on the real node with images that behave like Fabric's own (testbed.fabric_images):
their users, modes and paths are what users' clusters have, so what passes here passes there.

Java is the case the home-made node hid: fabric-javaenv keeps everything under /root (0700)
and works as root only, so k8scc runs Java as the image's user, which PodSecurity `baseline`
admits and `restricted` refuses, and doctor says so before any install.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from testbed.cluster import NONROOT_JAVAENV_IMAGE, Testbed
from testbed.objects import load
from tests.support.builder import (
    Builder,
    apply_rbac,
    make_builder,
    package_source,
    peer_env,
    transfer_volume,
)
from tests.support.fakepeer import FakePeer
from tests.support.pods import terminated, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

_counter = itertools.count(1)
BUILT_FILE = {"golang": "chaincode", "node": "package.json", "java": "chaincode.jar"}


@pytest.fixture
def client(testbed: Testbed) -> Iterator[Client]:
    admin = testbed.control_plane.client()
    yield admin
    admin.close()


def namespace_for(testbed: Testbed, request: pytest.FixtureRequest, enforce: str) -> str:
    name = f"fi-{next(_counter)}-{request.node.name.replace('_', '-')}"[:40].lower()
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    testbed.control_plane.create_namespace(name, enforce=enforce)
    return name


def builder_in(
    testbed: Testbed, namespace: str, tmp_path: Path, extra: dict[str, Any] | None = None
) -> Builder:
    apply_rbac(testbed.control_plane, namespace)
    volume = transfer_volume(testbed.control_plane, namespace, tmp_path / "volume")
    return make_builder(testbed, namespace, volume, tmp_path, extra)


def pod_output(client: Client, namespace: str, name: str, image: str, script: str) -> str:
    """What `script` prints in a pod of `image`, run as the image's own user in its WORKDIR."""
    manifest = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": ["/bin/sh", "-c", script],
                }
            ],
        },
    }
    client.create(load(Pod, manifest), namespace=namespace)
    state = terminated(wait_for(client, name, namespace, has_terminated, 120))
    log = "".join(client.log(name, namespace=namespace))
    assert state["exitCode"] == 0, log
    return log


def has_terminated(pod: dict[str, Any]) -> bool:
    try:
        return bool(terminated(pod))
    except (AssertionError, KeyError):
        return False


def build_and_register(builder: Builder, testbed: Testbed, platform: str, tmp_path: Path) -> str:
    """Builds the platform's sample and launches it at a fake peer; the build's and the
    run's stderr."""
    source, metadata = package_source(platform, tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode == 0, built.stderr
    assert (output / "output" / BUILT_FILE[platform]).is_file()
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        chaincode_id = f"asset_1.0:{'cd' * 32}"
        run_meta = tmp_path / "run"
        run_meta.mkdir()
        (run_meta / "chaincode.json").write_text(json.dumps(peer.chaincode_json(chaincode_id)))
        run = builder.start("run", output, run_meta)
        try:
            assert peer.wait_registered(chaincode_id, timeout=180), run.stderr
            # The chaincode's own first line, streamed from its pod into the peer's log.
            language = "go" if platform == "golang" else platform
            started = f"| asset-transfer: starting {language} chaincode"
            assert run.wait_for_line(started, 30), run.stderr
        finally:
            run.stop()
    return f"{built.stderr}\n{run.stderr}"


# -- the images ------------------------------------------------------------------------------

IMAGE_FACTS = "id -u; pwd; command -v mvn gradle || true; echo PATH=$PATH"


def test_javaenv_keeps_everything_under_roots_private_home(
    testbed: Testbed, client: Client, request: pytest.FixtureRequest
) -> None:
    ns = namespace_for(testbed, request, "baseline")
    shown = pod_output(
        client,
        ns,
        "javaenv",
        "hyperledger/fabric-javaenv:2.5",
        f"{IMAGE_FACTS}; stat -c '%a %U' /root; java -version 2>&1 | head -n 1;"
        " ls /root/chaincode-java /root/chaincode-java/lib | grep -c 'fabric-chaincode-shim';"
        " ls -d /root/.m2/repository/org/hyperledger/fabric-chaincode-java/fabric-chaincode-shim",
    ).splitlines()
    assert shown[:2] == ["0", "/root/chaincode-java"]
    assert not any(line.endswith(("/mvn", "/gradle")) for line in shown)
    assert "700 root" in shown
    assert any(line.startswith('openjdk version "21.') for line in shown), shown
    assert "1" in shown  # the shim's jar in lib/
    assert shown[-1].endswith("fabric-chaincode-shim")


def test_go_and_node_images_have_fabrics_users_and_paths(
    testbed: Testbed, client: Client, request: pytest.FixtureRequest
) -> None:
    ns = namespace_for(testbed, request, "baseline")
    ccenv = pod_output(
        client, ns, "ccenv", "hyperledger/fabric-ccenv:3.1",
        f"{IMAGE_FACTS}; stat -c '%U' /chaincode/input /chaincode/output; go version",
    ).splitlines()  # fmt: skip
    assert ccenv[0] == "500"
    assert ccenv[-3:-1] == ["chaincode", "chaincode"]
    assert ccenv[-1].startswith("go version go1.")
    baseos = pod_output(
        client, ns, "baseos", "hyperledger/fabric-baseos:2.5", "id -u; ls /usr/local/bin | wc -l"
    ).splitlines()
    assert baseos == ["500", "0"]
    nodeenv = pod_output(
        client, ns, "nodeenv", "hyperledger/fabric-nodeenv:2.5",
        "id -u; test -x /chaincode/build.sh && test -x /chaincode/start.sh && echo scripts;"
        " stat -c '%a %U' /chaincode/output /usr/local/src; node --version",
    ).splitlines()  # fmt: skip
    assert nodeenv[:4] == ["0", "scripts", "755 root", "755 root"]
    assert nodeenv[4].startswith("v")


# -- k8scc with them -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "enforce"),
    [("golang", "restricted"), ("node", "restricted"), ("java", "baseline")],
)
def test_samples_build_and_register_from_fabrics_image_layouts(
    testbed: Testbed, request: pytest.FixtureRequest, tmp_path: Path, platform: str, enforce: str
) -> None:
    """Java's sample has no wrapper of its own: it builds with the image's, offline (pods
    reach no Maven repository), and starts with the image's start script, as root."""
    ns = namespace_for(testbed, request, enforce)
    stderr = build_and_register(builder_in(testbed, ns, tmp_path), testbed, platform, tmp_path)
    assert "stopped by SIGTERM" in stderr


def test_java_as_uid_500_cannot_use_the_stock_javaenv(
    testbed: Testbed, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Why Java runs as the image's user: a uid of k8scc's choosing meets /root 0700."""
    ns = namespace_for(testbed, request, "restricted")
    builder = builder_in(testbed, ns, tmp_path, {"platforms": {"java": {"runAsUser": 500}}})
    source, metadata = package_source("java", tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode != 0
    assert "Permission denied" in built.stderr
    assert list(output.iterdir()) == []


def test_java_in_a_restricted_namespace_is_refused_in_one_line_and_doctor_says_so_first(
    testbed: Testbed, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ns = namespace_for(testbed, request, "restricted")
    builder = builder_in(testbed, ns, tmp_path)
    doctor = subprocess.run(
        [sys.executable, "-m", "k8scc", "doctor", "--builder-dir", str(builder.directory)],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert doctor.returncode == 1
    [admission] = [line for line in doctor.stdout.splitlines() if line.startswith("admission")]
    assert (
        f"namespace {ns} refuses platforms java (java: pods run as the image's own user"
        in admission
    )
    assert 'violates PodSecurity "restricted:latest"' in admission
    source, metadata = package_source("java", tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode != 0
    [error] = [line for line in built.stderr.splitlines() if "error" in line.lower()]
    assert "restricted" in error
    assert list(output.iterdir()) == []


def test_java_builds_and_registers_under_restricted_with_the_nonroot_recipe(
    testbed: Testbed, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """images/javaenv-nonroot, built by buildah from the javaenv image, run as uid 500."""
    ns = namespace_for(testbed, request, "restricted")
    image = {"buildImage": NONROOT_JAVAENV_IMAGE, "runImage": NONROOT_JAVAENV_IMAGE}
    settings = {"platforms": {"java": {**image, "runAsUser": 500}}}
    stderr = build_and_register(
        builder_in(testbed, ns, tmp_path, settings), testbed, "java", tmp_path
    )
    assert f"building java chaincode in image {NONROOT_JAVAENV_IMAGE}" in stderr
