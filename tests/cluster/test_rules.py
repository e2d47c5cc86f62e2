"""Per-chaincode rules on the real node: a matching rule's environment (a Secret's keys among
it) reaches the chaincode process and its resources the pod, a rule that does not match changes
nothing, and a bad rule stops the step with one line before anything is created."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, Secret

from k8scc import names
from testbed import binaries
from testbed.cluster import Testbed
from tests.cluster.test_failures import CHAINCODE_ID, error_lines, launch, write_chaincode_json
from tests.cluster.test_steps import wait_clean
from tests.support.builder import apply_rbac, make_builder
from tests.support.fakepeer import FakePeer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

RULES = [
    {
        "match": {"label": "asset_*"},
        "chaincode": {
            "env": {"REGION": "eu"},
            "envFrom": [{"secretRef": {"name": "asset-settings"}, "prefix": "APP_"}],
            "resources": {"limits": {"memory": "200Mi"}},
            "labels": {"tier": "gold"},
        },
    },
    {"match": {"label": "basic_*"}, "chaincode": {"env": {"REGION": "us"}}},
]


def pod_exec(testbed: Testbed, namespace: str, pod: str, *argv: str) -> bytes:
    """What `argv` prints, run in the pod's container as kubectl exec runs it."""
    kubectl = binaries.ensure(binaries.KUBECTL) / "kubectl"
    config = f"--kubeconfig={testbed.control_plane.admin_kubeconfig}"
    shown = subprocess.run(
        [str(kubectl), config, "exec", "-n", namespace, pod, "--", *argv],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return shown.stdout


def process_environment(testbed: Testbed, namespace: str, pod: str) -> dict[str, str]:
    """The environment of the container's first process, as the kernel holds it."""
    shown = pod_exec(testbed, namespace, pod, "cat", "/proc/1/environ")
    pairs = (item.decode().partition("=") for item in shown.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def test_a_matching_rule_gives_the_chaincode_its_environment_and_resources(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    apply_rbac(testbed.control_plane, namespace)
    admin.create(
        Secret(metadata=ObjectMeta(name="asset-settings"), stringData={"GREETING": "hello"}),
        namespace=namespace,
    )
    builder = make_builder(testbed, namespace, volume_dir, tmp_path, {"chaincodes": RULES})
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        run = launch(builder, golang_output, tmp_path / "run", peer)
        try:
            assert peer.wait_registered(CHAINCODE_ID, 60), run.stderr
            name = names.chaincode_name("peer0.org1.example.com", CHAINCODE_ID)
            pod = admin.get(Pod, name, namespace=namespace)
            environment = process_environment(testbed, namespace, name)
        finally:
            run.stop()
    assert (environment["APP_GREETING"], environment["REGION"]) == ("hello", "eu")
    assert environment["CORE_CHAINCODE_ID_NAME"] == CHAINCODE_ID
    [container] = pod.spec.containers  # type: ignore[union-attr]
    assert container.resources.limits == {"memory": "200Mi"}  # type: ignore[union-attr]
    assert pod.metadata.labels["tier"] == "gold"  # type: ignore[index, union-attr]
    [started] = [line for line in run.stderr.splitlines() if "chaincode pod started" in line]
    assert started.endswith(", with settings from chaincodes[0]"), started
    # The operator's Secret is theirs to remove; everything k8scc made is gone.
    admin.delete(Secret, "asset-settings", namespace=namespace)
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_a_bad_rule_stops_the_launch_in_one_line_creating_nothing(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    apply_rbac(testbed.control_plane, namespace)
    bad = [{"match": {"label": "asset_*"}, "chaincode": {"env": {"CORE_PEER_TLS_ENABLED": "no"}}}]
    builder = make_builder(testbed, namespace, volume_dir, tmp_path, {"chaincodes": bad})
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        meta = write_chaincode_json(tmp_path / "run", peer.chaincode_json(CHAINCODE_ID))
        ran = builder.run("run", golang_output, meta, timeout=60)
    assert ran.returncode == 1
    [error] = error_lines(ran.stderr)
    assert error.endswith("chaincodes[0].chaincode.env.CORE_PEER_TLS_ENABLED: set by k8scc"), error
    assert wait_clean(admin, namespace, builder.transfer) == []
