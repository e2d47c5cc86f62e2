"""k8scc with a real Fabric peer and orderer: the peer installs, builds, launches and invokes
chaincode through k8scc configured exactly as a user would (a builder directory written by
`k8scc install-builder`, its k8scc.yaml beside bin/, the core.yaml externalBuilders entry),
reaching the test bed in-cluster style as the ServiceAccount bound to deploy/chaincode/rbac.yaml."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod, Secret

from testbed.cluster import Testbed
from testbed.fabric import FabricNetwork
from testbed.k8scc_setup import k8scc_network
from tests.support.builder import SAMPLES
from tests.support.images import chaincode_image

pytestmark = pytest.mark.e2e

LANGUAGES = {"golang": "go", "node": "node", "java": "java"}
ASSET = ["CreateAsset", "asset1", "blue", "5", "tom", "300"]


@dataclass
class PodRecorder:
    """Every pod created in the namespace while the test runs, as first seen."""

    client: Client
    namespace: str
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        # The test bed outlives every test, but not the session: errors end the recording.
        with contextlib.suppress(Exception):
            for kind, pod in self.client.watch(Pod, namespace=self.namespace, server_timeout=5):
                name = pod.metadata.name if pod.metadata else ""
                if kind == "ADDED" and name:
                    self.seen.setdefault(name, pod.to_dict())
                if self.stop.is_set():
                    return

    def named(self, prefix: str) -> list[dict[str, Any]]:
        return [pod for name, pod in self.seen.items() if name.startswith(prefix)]


@dataclass
class Deployment:
    network: FabricNetwork
    client: Client
    namespace: str
    recorder: PodRecorder

    def pods(self) -> list[str]:
        listed = self.client.list(Pod, namespace=self.namespace)
        return [str(p.metadata.name) for p in listed if p.metadata]

    def uid(self, pod: str) -> str:
        metadata = self.client.get(Pod, pod, namespace=self.namespace).metadata
        assert metadata is not None
        return str(metadata.uid)

    def secrets(self) -> list[str]:
        listed = self.client.list(Secret, namespace=self.namespace)
        return [str(s.metadata.name) for s in listed if s.metadata]

    def wait(self, condition: Any, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.5)
        return bool(condition())


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest,
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
) -> Iterator[Deployment]:
    version, tls = request.param
    network = k8scc_network(testbed, namespace, volume_dir, tmp_path, version, tls)
    with deployed(network, testbed, admin, namespace) as deployment:
        yield deployment


@contextlib.contextmanager
def deployed(
    network: FabricNetwork, testbed: Testbed, admin: Client, namespace: str
) -> Iterator[Deployment]:
    """`network` started, with every pod of `namespace` recorded meanwhile."""
    recorder = PodRecorder(testbed.control_plane.client(), namespace)
    threading.Thread(target=recorder.run, daemon=True).start()
    network.start()
    try:
        yield Deployment(network, admin, namespace, recorder)
    finally:
        network.stop()
        recorder.stop.set()


def assert_hardened(pod: dict[str, Any], platform: str) -> None:
    """Restricted, but for Java, which runs as its image's user: everything else is kept."""
    spec = pod["spec"]
    if platform == "java":
        assert "runAsUser" not in spec["securityContext"]
    else:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}


def deploy_sample(deployment: Deployment, platform: str, label: str, sequence: int) -> str:
    network = deployment.network
    package = network.package(SAMPLES / LANGUAGES[platform], platform, label)
    started = time.monotonic()
    package_id = network.deploy(package, "basic", sequence=sequence, version=str(sequence))
    print(
        f"{platform} {network.version}: install+approve+commit {time.monotonic() - started:.1f} s"
    )
    return package_id


def invoke_and_query(deployment: Deployment, asset_id: str) -> dict[str, Any]:
    network = deployment.network
    started = time.monotonic()
    network.invoke("basic", [ASSET[0], asset_id, *ASSET[2:]])
    print(f"first invoke {time.monotonic() - started:.1f} s")
    return dict(json.loads(network.query("basic", ["ReadAsset", asset_id])))


@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    ("deployment", "platform"),
    [
        pytest.param(
            (version, True),
            platform,
            id=f"fabric{version}-{platform}",
            # Java runs as its image's user, which `baseline` admits (see docs/security.md).
            marks=[pytest.mark.podsecurity("baseline")] if platform == "java" else [],
        )
        for version in ("3.1", "2.5")
        for platform in LANGUAGES
    ],
    indirect=["deployment"],
)
def test_install_invoke_and_query_through_k8scc(deployment: Deployment, platform: str) -> None:
    package_id = deploy_sample(deployment, platform, f"basic_{platform}_1", 1)
    asset = invoke_and_query(deployment, "asset1")
    assert (asset["ID"], asset["owner"], asset["appraisedValue"]) == ("asset1", "tom", 300)

    builders = deployment.recorder.named("ccbuild-")
    assert len(builders) == 1
    assert_hardened(builders[0], platform)
    chaincode_pods = deployment.recorder.named("cc-")
    assert len(chaincode_pods) == 1
    assert_hardened(chaincode_pods[0], platform)
    env = {e["name"]: e.get("value") for e in chaincode_pods[0]["spec"]["containers"][0]["env"]}
    assert env["CORE_CHAINCODE_ID_NAME"] == package_id
    assert env["CORE_PEER_TLS_ENABLED"] == "true"
    assert package_id not in json.dumps(builders[0])  # the package id is unknown while building

    # The chaincode's own output reached the peer's log through `run`.
    language = "go" if platform == "golang" else platform
    assert f"asset-transfer: starting {language} chaincode" in deployment.network.peer_log()
    # release handed the CouchDB index to the peer, which persisted it.
    builds = deployment.network.workdir / "peer" / "data" / "externalbuilder" / "builds"
    indexes = list(builds.glob("*/release/statedb/couchdb/indexes/indexOwner.json"))
    assert len(indexes) == 1


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("deployment", [("3.1", True)], indirect=True, ids=["fabric3.1"])
def test_upgrade_relaunch_and_peer_stop(deployment: Deployment) -> None:
    first = deploy_sample(deployment, "golang", "basic_1", 1)
    invoke_and_query(deployment, "asset1")
    [old_pod] = deployment.pods()
    [secret] = deployment.secrets()
    assert secret.startswith(f"{old_pod}-")  # the launch's own Secret

    # Sequence 2 with a new package: the peer stops the old chaincode and launches the new.
    second = deploy_sample(deployment, "golang", "basic_2", 2)
    assert second != first
    invoke_and_query(deployment, "asset2")
    assert deployment.wait(
        lambda: old_pod not in deployment.pods() and secret not in deployment.secrets()
    )
    [new_pod] = deployment.pods()
    assert new_pod != old_pod

    # Deleting the chaincode pod by hand makes `run` exit, and the chaincode is launched again
    # under the same name: by the next invoke, or sooner by a launch the peer's custodian queued
    # at the commit and reaches only now.
    deleted = deployment.uid(new_pod)
    deployment.client.delete(Pod, new_pod, namespace=deployment.namespace)
    exited = f"error: pod {new_pod} was deleted"
    assert deployment.wait(lambda: exited in deployment.network.peer_log())
    invoke_and_query(deployment, "asset3")
    assert deployment.pods() == [new_pod]
    assert deployment.uid(new_pod) != deleted

    # Stopping the peer stops its launchers, which remove their pods and Secrets.
    deployment.network.stop()
    assert deployment.wait(lambda: not deployment.pods() and not deployment.secrets(), 30)


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("deployment", [("3.1", False)], indirect=True, ids=["fabric3.1-notls"])
def test_peer_with_tls_off(deployment: Deployment) -> None:
    deploy_sample(deployment, "node", "basic_notls_1", 1)
    asset = invoke_and_query(deployment, "asset1")
    assert asset["color"] == "blue"
    [pod] = deployment.recorder.named("cc-")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["CORE_PEER_TLS_ENABLED"] == "false"
    assert "CORE_TLS_CLIENT_KEY_FILE" not in env
    assert deployment.secrets() == []


def k8s_package(workdir: Path, label: str, image: str) -> Path:
    """A package of type k8s as fabric-builder-k8s users make them: metadata.json and a
    code.tar.gz holding image.json, which names the image by digest."""
    name, digest = image.split("@")
    image_json = json.dumps({"name": name, "digest": digest}).encode()
    code = io.BytesIO()
    with tarfile.open(fileobj=code, mode="w:gz") as tar:
        add_bytes(tar, "image.json", image_json)
    package = workdir / f"{label}.tgz"
    with tarfile.open(package, "w:gz") as tar:
        add_bytes(tar, "metadata.json", json.dumps({"type": "k8s", "label": label}).encode())
        add_bytes(tar, "code.tar.gz", code.getvalue())
    return package


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mode = len(data), 0o644
    tar.addfile(member, io.BytesIO(data))


SIDE_BY_SIDE_RULES = [
    {
        "match": {"label": "basic_*"},
        "chaincode": {"env": {"ORIGIN": "source"}, "resources": {"limits": {"memory": "300Mi"}}},
    },
    {
        "match": {"label": "prebuilt_*"},
        "chaincode": {"env": {"ORIGIN": "image"}, "resources": {"limits": {"memory": "200Mi"}}},
    },
]


@pytest.mark.timeout(1200)
def test_source_and_k8s_packages_side_by_side_each_with_its_rule(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
) -> None:
    network = k8scc_network(
        testbed, namespace, volume_dir, tmp_path, extra={"chaincodes": SIDE_BY_SIDE_RULES}
    )
    with deployed(network, testbed, admin, namespace) as deployment:
        deploy_sample(deployment, "golang", "basic_1", 1)
        invoke_and_query(deployment, "asset1")
        # The image a CI would publish: the Go sample's binary, taken from the peer's own build.
        [binary] = (network.workdir / "peer" / "data" / "externalbuilder" / "builds").glob(
            "*/bld/output/chaincode"
        )
        image = testbed.real_node.load(chaincode_image(binary))
        package = k8s_package(tmp_path, "prebuilt_1", image)
        network.deploy(package, "prebuilt")
        network.invoke("prebuilt", [ASSET[0], "asset9", *ASSET[2:]])
        asset = json.loads(network.query("prebuilt", ["ReadAsset", "asset9"]))
        assert (asset["ID"], asset["appraisedValue"]) == ("asset9", 300)
        # One build pod only: the k8s package was recorded, not built.
        assert len(deployment.recorder.named("ccbuild-")) == 1
        pods = {
            pod["spec"]["containers"][0]["image"]: pod for pod in deployment.recorder.named("cc-")
        }
        assert len(pods) == 2 and image in pods
        for pod in pods.values():
            [box] = pod["spec"]["containers"]
            env = {e["name"]: e.get("value") for e in box["env"]}
            source = pod["spec"]["containers"][0]["image"] != image
            assert env["ORIGIN"] == ("source" if source else "image")
            assert box["resources"]["limits"]["memory"] == ("300Mi" if source else "200Mi")
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        # Stopping the peer stops both launchers, which remove their pods and Secrets.
        network.stop()
        assert deployment.wait(lambda: not deployment.pods() and not deployment.secrets(), 30)
