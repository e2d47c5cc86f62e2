"""The builder pod, the chaincode pod and the TLS Secret: admitted under PodSecurity
`restricted`, laid out as Fabric's Docker builder and launcher do, and configured as asked."""

from __future__ import annotations

import base64
import copy
import json
import platform as host_platform
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from k8scc import config as configuration
from k8scc import names, podscripts, render
from k8scc.config import Config
from k8scc.metadata import ChaincodeJson
from k8scc.peer import Identity, Owner
from k8scc.platforms import FROM_SOURCE, PLATFORMS, Platform
from tests.unit.helpers import PeerTls, is_dns_label, peer_tls, restricted_violations

pytestmark = pytest.mark.unit

HASH = "9c" * 32
PACKAGE_ID = f"My_CC+v1:{HASH}"
ADDRESS = "peer0.org1.example.com:7052"
TRANSFER_DIR = "cc-my-cc-v1-0123456789"
PLATFORM_NAMES = sorted(FROM_SOURCE)
TLS_ENV = {
    "CORE_TLS_CLIENT_KEY_PATH": "/etc/hyperledger/fabric/client.key",
    "CORE_TLS_CLIENT_CERT_PATH": "/etc/hyperledger/fabric/client.crt",
    "CORE_TLS_CLIENT_KEY_FILE": "/etc/hyperledger/fabric/client_pem.key",
    "CORE_TLS_CLIENT_CERT_FILE": "/etc/hyperledger/fabric/client_pem.crt",
    "CORE_PEER_TLS_ROOTCERT_FILE": "/etc/hyperledger/fabric/peer.crt",
}
OWNER = Owner(name="peer0-0", uid="1f7a3c2e-0000-4000-8000-000000000001")

FULL_CONFIG = """
transfer:
  claimName: cc-transfer
platforms:
  golang:
    runAsUser: 1234
    runAsGroup: 4321
buildEnv:
  HTTPS_PROXY: http://proxy:3128
builder:
  resources:
    requests: {cpu: 500m, memory: 1Gi}
    limits: {memory: 2Gi}
chaincode:
  resources:
    limits: {cpu: "1", memory: 256Mi}
  logging: {level: debug, shim: warning, format: "%{message}"}
  terminationGracePeriodSeconds: 7
timeouts: {build: 90s}
pod:
  nodeSelector: {kubernetes.io/os: linux, pool: fabric}
  tolerations: [{key: dedicated, operator: Equal, value: fabric, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]
  imagePullSecrets: [regcred, other-cred]
  imagePullPolicy: Always
  serviceAccountName: chaincode
  labels: {team: blue}
  annotations: {example.com/owner: "team blue"}
"""


@pytest.fixture(scope="module")
def tls() -> PeerTls:
    return peer_tls()


@pytest.fixture
def plain() -> Config:
    return configuration.parse("")


@pytest.fixture
def full() -> Config:
    return configuration.parse(textwrap.dedent(FULL_CONFIG))


def launch(tls: PeerTls | None) -> ChaincodeJson:
    return ChaincodeJson(
        chaincode_id=PACKAGE_ID,
        peer_address=ADDRESS,
        client_cert=tls.client_cert if tls else "",
        client_key=tls.client_key if tls else "",
        root_cert=tls.root_cert if tls else "",
        mspid="Org1MSP",
    )


def builder(config: Config, name: str, owner: Owner | None = None) -> dict[str, Any]:
    return render.builder_pod(
        config,
        PLATFORMS[name],
        "example.com/cc",
        "My_CC+v1",
        "ccbuild-my-cc-v1-0123456789",
        Identity("peer0.org1", owner),
        TRANSFER_DIR,
    )


def chaincode_pod(
    config: Config, name: str, tls: PeerTls | None, owner: Owner | None = None
) -> dict[str, Any]:
    platform = PLATFORMS[name]
    return render.chaincode_pod(
        config,
        platform,
        config.platforms[name].run_image,
        launch(tls),
        names.chaincode_name("peer0.org1", PACKAGE_ID),
        Identity("peer0.org1", owner),
        TRANSFER_DIR,
    )


def secret(config: Config, tls: PeerTls, owner: Owner | None = None) -> dict[str, Any]:
    return render.tls_secret(
        launch(tls),
        names.chaincode_name("peer0.org1", PACKAGE_ID),
        Identity("peer0.org1", owner),
        config,
    )


def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    pairs = container(pod)["env"]
    assert all(set(pair) == {"name", "value"} for pair in pairs)
    env = {pair["name"]: pair["value"] for pair in pairs}
    assert len(env) == len(pairs)
    return env


def mounts_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mount["mountPath"]: mount for mount in container(pod)["volumeMounts"]}


def volumes_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume for volume in pod["spec"]["volumes"]}


def all_pods(config: Config, tls: PeerTls) -> list[dict[str, Any]]:
    return [
        pod
        for name in PLATFORM_NAMES
        for pod in (
            builder(config, name),
            chaincode_pod(config, name, tls),
            chaincode_pod(config, name, None),
        )
    ]


# --- PodSecurity and pod basics -----------------------------------------------------------------


# Java runs as fabric-javaenv's own user (root) unless configured otherwise: see platforms.py.
NON_ROOT_BY_DEFAULT = [name for name in PLATFORM_NAMES if name != "java"]
NON_ROOT_JAVA = "platforms:\n  java:\n    runAsUser: 500\n"


def some_pod(config: Config, name: str, kind: str, tls: PeerTls) -> dict[str, Any]:
    if kind == "builder":
        return builder(config, name)
    return chaincode_pod(config, name, tls if kind == "chaincode" else None)


@pytest.mark.parametrize("name", NON_ROOT_BY_DEFAULT)
@pytest.mark.parametrize("kind", ["builder", "chaincode", "chaincode-no-tls"])
@pytest.mark.parametrize("which", ["plain", "full", "java-500"])
def test_pods_pass_podsecurity_restricted(
    tls: PeerTls, name: str, kind: str, which: str, plain: Config, full: Config
) -> None:
    config = {"plain": plain, "full": full}.get(which) or configuration.parse(NON_ROOT_JAVA)
    if which == "java-500":
        name = "java"
    pod = some_pod(config, name, kind, tls)
    assert restricted_violations(pod) == []
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsUser"] == config.platforms[name].run_as_user
    assert spec["securityContext"]["runAsGroup"] == config.platforms[name].run_as_group
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    assert is_dns_label(pod["metadata"]["name"])


@pytest.mark.parametrize("kind", ["builder", "chaincode", "chaincode-no-tls"])
@pytest.mark.parametrize("which", ["plain", "full"])
def test_java_pods_run_as_the_images_user_and_break_restricted_only_there(
    tls: PeerTls, kind: str, which: str, plain: Config, full: Config
) -> None:
    pod = some_pod(plain if which == "plain" else full, "java", kind, tls)
    assert restricted_violations(pod) == [
        "build: runAsNonRoot is not true"
        if kind == "builder"
        else "chaincode: runAsNonRoot is not true",
    ]
    security = pod["spec"]["securityContext"]
    assert security == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert "runAsNonRoot" not in container(pod)["securityContext"]
    assert "HOME" not in env_of(builder(plain, "java"))


def _drop_run_as_non_root(pod: dict[str, Any]) -> None:
    pod["spec"]["securityContext"].pop("runAsNonRoot")
    pod["spec"]["containers"][0]["securityContext"].pop("runAsNonRoot")


def test_the_restricted_checker_catches_violations(plain: Config) -> None:
    good = builder(plain, "golang")
    breakages: list[Callable[[dict[str, Any]], object]] = [
        lambda p: p["spec"].update(hostNetwork=True),
        lambda p: p["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        lambda p: p["spec"]["securityContext"].update(runAsUser=0),
        lambda p: p["spec"]["containers"][0]["securityContext"].update(runAsNonRoot=False),
        _drop_run_as_non_root,
        lambda p: p["spec"]["securityContext"].pop("seccompProfile"),
        lambda p: p["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        lambda p: p["spec"]["containers"][0]["securityContext"].update(privileged=True),
        lambda p: p["spec"]["containers"][0]["securityContext"].update(capabilities={}),
        lambda p: p["spec"]["containers"][0]["securityContext"]["capabilities"].update(
            add=["SYS_ADMIN"]
        ),
        lambda p: p["spec"]["containers"][0].update(ports=[{"containerPort": 1, "hostPort": 1}]),
    ]
    for breakage in breakages:
        pod = copy.deepcopy(good)
        breakage(pod)
        assert restricted_violations(pod) != []


# --- builder pod ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_builder_mounts_input_read_only_and_output_from_subpaths(plain: Config, name: str) -> None:
    pod = builder(plain, name)
    mounts = mounts_of(pod)
    assert mounts["/chaincode/input"] == {
        "name": "transfer",
        "mountPath": "/chaincode/input",
        "subPath": f"{TRANSFER_DIR}/input",
        "readOnly": True,
    }
    output = mounts["/chaincode/output"]
    assert output["name"] == "transfer"
    assert output["subPath"] == f"{TRANSFER_DIR}/output"
    assert not output.get("readOnly")
    assert mounts["/tmp"]["name"] == "scratch"
    volumes = volumes_of(pod)
    assert volumes["transfer"] == {
        "name": "transfer",
        "persistentVolumeClaim": {"claimName": "k8scc-transfer"},
    }
    assert volumes["scratch"] == {"name": "scratch", "emptyDir": {}}
    assert set(volumes) == {"transfer", "scratch"}


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_builder_runs_the_platform_build_script(plain: Config, name: str) -> None:
    pod = builder(plain, name)
    box = container(pod)
    platform: Platform = PLATFORMS[name]
    assert box["name"] == "build"
    assert box["image"] == plain.platforms[name].build_image
    assert box["imagePullPolicy"] == "IfNotPresent"
    assert "command" not in box  # the image's ENTRYPOINT runs, as under Fabric's builder
    command = box["args"]
    assert command[:2] == ["/bin/sh", "-c"]
    assert command[3] == "k8scc-build"
    assert command[4] == platform.build_script("example.com/cc", False)
    assert len(command) == 5
    assert box.get("workingDir") == platform.build_workdir
    assert box["securityContext"]["readOnlyRootFilesystem"] is False
    assert pod["spec"]["activeDeadlineSeconds"] == 280
    # Deleted with a grace period, so the build stops before its directory is removed.
    assert pod["spec"]["terminationGracePeriodSeconds"] == 2


@pytest.mark.parametrize("status", [0, 1, 7])
def test_builder_wrapper_keeps_the_exit_status_and_opens_the_output(
    plain: Config, tmp_path: Path, status: int
) -> None:
    command = container(builder(plain, "golang"))["args"]
    output = tmp_path / "output"
    output.mkdir()
    wrapper = command[2].replace("/chaincode/output", str(output))
    script = f"umask 077; mkdir {output}/sub; echo x > {output}/sub/file; exit {status}"
    result = subprocess.run(
        [command[0], command[1], wrapper, command[3], script], timeout=30, check=False
    )
    assert result.returncode == status
    # The node's architecture, for `build` to record and `run` to pin the chaincode to.
    assert (output / render.ARCH_FILE).read_text() == host_platform.machine() + "\n"
    assert (output / "sub" / "file").stat().st_mode & 0o666 == 0o666
    assert (output / "sub").stat().st_mode & 0o777 == 0o777


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_a_chaincode_runs_on_the_architecture_it_was_built_for(
    plain: Config, full: Config, name: str
) -> None:
    """In a mixed cluster a Go binary or a native Node addon built on arm64 must not be
    launched on amd64; an operator's own kubernetes.io/arch choice stands."""

    def selector(config: Config, architecture: str) -> dict[str, str]:
        pod = render.chaincode_pod(
            config,
            PLATFORMS[name],
            config.platforms[name].run_image,
            launch(None),
            "cc-x",
            Identity("peer0.org1"),
            TRANSFER_DIR,
            architecture,
        )
        return dict(pod["spec"].get("nodeSelector") or {})

    assert selector(plain, "arm64") == {"kubernetes.io/arch": "arm64"}
    assert selector(plain, "") == {}  # built before k8scc recorded it
    assert selector(full, "arm64") == {
        "kubernetes.io/os": "linux",
        "pool": "fabric",
        "kubernetes.io/arch": "arm64",
    }
    chosen = configuration.parse("pod:\n  nodeSelector: {kubernetes.io/arch: amd64}\n")
    assert selector(chosen, "arm64") == {"kubernetes.io/arch": "amd64"}


def test_builder_env(plain: Config, full: Config) -> None:
    assert env_of(builder(plain, "golang")) == {
        "HOME": "/tmp",
        "GOPROXY": "https://proxy.golang.org",
        "GOTOOLCHAIN": "auto",
    }
    assert env_of(builder(plain, "node")) == {"HOME": "/tmp"}
    assert env_of(builder(full, "java")) == {"HTTPS_PROXY": "http://proxy:3128"}
    non_root_java = configuration.parse(NON_ROOT_JAVA)
    assert env_of(builder(non_root_java, "java")) == {"HOME": "/tmp"}
    overridden = configuration.parse("platforms:\n  golang:\n    buildEnv: {GOPROXY: direct}\n")
    assert env_of(builder(overridden, "golang"))["GOPROXY"] == "direct"


def test_builder_uses_the_configured_timeout_and_images(full: Config) -> None:
    pod = builder(full, "golang")
    assert pod["spec"]["activeDeadlineSeconds"] == 90
    assert container(pod)["imagePullPolicy"] == "Always"
    assert volumes_of(pod)["transfer"]["persistentVolumeClaim"] == {"claimName": "cc-transfer"}
    custom = configuration.parse("platforms:\n  node:\n    buildImage: reg/nodeenv:x\n")
    assert container(builder(custom, "node"))["image"] == "reg/nodeenv:x"


# --- chaincode pod ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_chaincode_pod_layout(plain: Config, tls: PeerTls, name: str) -> None:
    platform = PLATFORMS[name]
    pod = chaincode_pod(plain, name, tls)
    box = container(pod)
    assert box["name"] == "chaincode"
    assert box["image"] == plain.platforms[name].run_image
    assert "command" not in box
    assert box["args"] == platform.launch(ADDRESS)
    assert box["workingDir"] == platform.output_dir
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = mounts_of(pod)
    assert mounts[platform.output_dir] == {
        "name": "transfer",
        "mountPath": platform.output_dir,
        "subPath": f"{TRANSFER_DIR}/output",
        "readOnly": True,
    }
    assert mounts["/etc/hyperledger/fabric"] == {
        "name": "tls",
        "mountPath": "/etc/hyperledger/fabric",
        "readOnly": True,
    }
    assert mounts["/tmp"]["name"] == "scratch"
    assert set(mounts) == {platform.output_dir, "/etc/hyperledger/fabric", "/tmp"}
    volumes = volumes_of(pod)
    assert volumes["transfer"]["persistentVolumeClaim"] == {
        "claimName": "k8scc-transfer",
        "readOnly": True,
    }
    # The launch's own Secret: a launch may overlap the end of the previous pod of the name.
    assert volumes["tls"]["secret"]["secretName"] == TRANSFER_DIR
    assert pod["spec"]["terminationGracePeriodSeconds"] == 2
    assert "activeDeadlineSeconds" not in pod["spec"]


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_chaincode_env_with_tls(plain: Config, tls: PeerTls, name: str) -> None:
    env = env_of(chaincode_pod(plain, name, tls))
    core = {key: value for key, value in env.items() if key.startswith("CORE_")}
    assert core == {
        "CORE_CHAINCODE_ID_NAME": PACKAGE_ID,
        "CORE_PEER_ADDRESS": ADDRESS,
        "CORE_PEER_TLS_ENABLED": "true",
        "CORE_PEER_LOCALMSPID": "Org1MSP",
        **TLS_ENV,
    }
    assert set(env) - set(core) <= {"HOME"}


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_chaincode_without_tls(plain: Config, name: str) -> None:
    pod = chaincode_pod(plain, name, None)
    env = env_of(pod)
    core = {key: value for key, value in env.items() if key.startswith("CORE_")}
    assert core == {
        "CORE_CHAINCODE_ID_NAME": PACKAGE_ID,
        "CORE_PEER_ADDRESS": ADDRESS,
        "CORE_PEER_TLS_ENABLED": "false",
        "CORE_PEER_LOCALMSPID": "Org1MSP",
    }
    assert not any("secret" in volume for volume in pod["spec"]["volumes"])
    assert "/etc/hyperledger/fabric" not in mounts_of(pod)
    assert set(volumes_of(pod)) == {"transfer", "scratch"}


def test_chaincode_logging_only_when_configured(full: Config, plain: Config, tls: PeerTls) -> None:
    logging = {
        "CORE_CHAINCODE_LOGGING_LEVEL": "debug",
        "CORE_CHAINCODE_LOGGING_SHIM": "warning",
        "CORE_CHAINCODE_LOGGING_FORMAT": "%{message}",
    }
    env = env_of(chaincode_pod(full, "node", tls))
    assert {k: v for k, v in env.items() if k.startswith("CORE_CHAINCODE_LOGGING")} == logging
    some = configuration.parse("chaincode:\n  logging: {level: info}\n")
    env = env_of(chaincode_pod(some, "node", None))
    assert {k: v for k, v in env.items() if k.startswith("CORE_CHAINCODE_LOGGING")} == {
        "CORE_CHAINCODE_LOGGING_LEVEL": "info"
    }
    env = env_of(chaincode_pod(plain, "node", tls))
    assert not any(key.startswith("CORE_CHAINCODE_LOGGING") for key in env)


def test_chaincode_pod_labels_and_annotations(plain: Config, tls: PeerTls) -> None:
    metadata = chaincode_pod(plain, "golang", tls)["metadata"]
    labels = metadata["labels"]
    assert labels[names.LABEL_STEP] == "run"
    assert labels[names.LABEL_PACKAGE_HASH] == HASH[:63]
    assert labels[names.LABEL_PEER] == names.peer_key("peer0.org1")
    assert all(is_dns_label(value) for value in labels.values())
    assert metadata["annotations"][names.ANNOTATION_PACKAGE_ID] == PACKAGE_ID
    assert metadata["annotations"][names.ANNOTATION_MSPID] == "Org1MSP"
    assert metadata["annotations"][names.ANNOTATION_PEER_ID] == "peer0.org1"


# --- the TLS Secret -----------------------------------------------------------------------------


def test_secret_holds_the_files_as_fabric_writes_them(plain: Config, tls: PeerTls) -> None:
    rendered = secret(plain, tls)
    assert rendered["kind"] == "Secret" and rendered["type"] == "Opaque"
    assert rendered["metadata"]["name"] == names.chaincode_name("peer0.org1", PACKAGE_ID)
    files = {key: base64.b64decode(value) for key, value in rendered["data"].items()}
    assert set(files) == {
        "client_pem.crt",
        "client_pem.key",
        "peer.crt",
        "client.crt",
        "client.key",
    }
    assert files["client_pem.crt"].decode() == tls.client_cert
    assert files["client_pem.key"].decode() == tls.client_key
    assert files["peer.crt"].decode() == tls.root_cert
    assert base64.b64decode(files["client.crt"]).decode() == tls.client_cert
    assert base64.b64decode(files["client.key"]).decode() == tls.client_key
    assert files["client_pem.key"].startswith(b"-----BEGIN EC PRIVATE KEY-----\n")


def test_secret_files_match_the_env_paths(plain: Config, tls: PeerTls) -> None:
    env = env_of(chaincode_pod(plain, "java", tls))
    pod = chaincode_pod(plain, "java", tls)
    mount = mounts_of(pod)["/etc/hyperledger/fabric"]["mountPath"]
    keys = set(secret(plain, tls)["data"])
    for variable in TLS_ENV:
        directory, _, file = env[variable].rpartition("/")
        assert directory == mount
        assert file in keys


def test_client_key_appears_nowhere_in_the_pods(full: Config, tls: PeerTls) -> None:
    forbidden = [
        tls.client_key.strip(),
        "".join(tls.key_body_lines),
        base64.b64encode(tls.client_key.encode()).decode(),
        *tls.key_body_lines,
    ]
    for pod in all_pods(full, tls):
        text = json.dumps(pod)
        for value in forbidden:
            assert value not in text
        assert "PRIVATE KEY" not in text


def test_redacted_hides_every_value(plain: Config, tls: PeerTls) -> None:
    rendered = secret(plain, tls)
    original = copy.deepcopy(rendered)
    hidden = render.redacted(rendered)
    assert rendered == original  # not modified in place
    assert set(hidden["data"]) == set(rendered["data"])
    assert set(hidden["data"].values()) == {"<redacted>"}
    assert hidden["metadata"] == rendered["metadata"]
    text = json.dumps(hidden)
    for value in rendered["data"].values():
        assert value not in text
    for line in tls.key_body_lines:
        assert line not in text
    assert render.redacted({"kind": "Secret"}) == {"kind": "Secret", "data": {}}


# --- configuration in the spec ----------------------------------------------------------------


def test_scheduling_settings_land_in_every_pod(full: Config, tls: PeerTls) -> None:
    for pod in all_pods(full, tls):
        spec = pod["spec"]
        assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "fabric"}
        assert spec["tolerations"] == [
            {"key": "dedicated", "operator": "Equal", "value": "fabric", "effect": "NoSchedule"}
        ]
        assert spec["affinity"] == full.affinity
        assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other-cred"}]
        assert spec["serviceAccountName"] == "chaincode"
        assert spec["automountServiceAccountToken"] is False
        assert container(pod)["imagePullPolicy"] == "Always"
        assert pod["metadata"]["labels"]["team"] == "blue"
        assert pod["metadata"]["annotations"]["example.com/owner"] == "team blue"


def test_unset_scheduling_settings_are_absent(plain: Config, tls: PeerTls) -> None:
    for pod in all_pods(plain, tls):
        for key in (
            "nodeSelector",
            "tolerations",
            "affinity",
            "imagePullSecrets",
            "serviceAccountName",
        ):
            assert key not in pod["spec"]
        assert "resources" not in container(pod)


def test_resources_land_in_the_right_container(full: Config, tls: PeerTls) -> None:
    assert container(builder(full, "golang"))["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }
    assert container(chaincode_pod(full, "golang", tls))["resources"] == {
        "limits": {"cpu": "1", "memory": "256Mi"}
    }


def test_platform_ids_and_grace_land_in_the_pod(full: Config, tls: PeerTls) -> None:
    pod = chaincode_pod(full, "golang", tls)
    context = pod["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (1234, 4321, 4321)
    assert pod["spec"]["terminationGracePeriodSeconds"] == 7
    assert chaincode_pod(full, "node", tls)["spec"]["securityContext"]["runAsUser"] == 1000


def test_secret_carries_configured_labels(full: Config, tls: PeerTls) -> None:
    assert secret(full, tls)["metadata"]["labels"]["team"] == "blue"


# --- owners -------------------------------------------------------------------------------------


def test_owner_references_only_with_an_owner(plain: Config, tls: PeerTls) -> None:
    reference = [
        {"apiVersion": "v1", "kind": "Pod", "name": OWNER.name, "uid": OWNER.uid},
    ]
    owned = [
        builder(plain, "golang", OWNER),
        chaincode_pod(plain, "golang", tls, OWNER),
        secret(plain, tls, OWNER),
    ]
    for manifest in owned:
        assert manifest["metadata"]["ownerReferences"] == reference
    unowned = [builder(plain, "golang"), chaincode_pod(plain, "golang", tls), secret(plain, tls)]
    for manifest in unowned:
        assert "ownerReferences" not in manifest["metadata"]


def test_the_secret_is_owned_by_the_chaincode_pod_that_mounts_it(
    plain: Config, tls: PeerTls
) -> None:
    """The Secret is created once its pod is accepted, naming the pod (and the peer's pod) as
    owners in the create itself, so no later request is needed for Kubernetes to collect it."""
    pod = Owner(name="chaincode-pod", uid="uid-pod")
    made = render.tls_secret(launch(tls), "launch-1", Identity("peer0.org1", OWNER), plain, pod)
    assert [owner["uid"] for owner in made["metadata"]["ownerReferences"]] == ["uid-pod", OWNER.uid]
    alone = render.tls_secret(launch(tls), "launch-1", Identity("peer0.org1"), plain, pod)
    assert alone["metadata"]["ownerReferences"] == [pod.reference()]


# --- transfer.mode api --------------------------------------------------------------------------

API = "transfer: {mode: api}\n"


def containers_named(pod: dict[str, Any], key: str = "containers") -> dict[str, dict[str, Any]]:
    return {box["name"]: box for box in pod["spec"].get(key) or []}


@pytest.mark.parametrize("name", NON_ROOT_BY_DEFAULT)
@pytest.mark.parametrize("kind", ["builder", "chaincode", "chaincode-no-tls"])
def test_api_mode_pods_pass_podsecurity_restricted(tls: PeerTls, name: str, kind: str) -> None:
    pod = some_pod(configuration.parse(API), name, kind, tls)
    assert restricted_violations(pod) == []


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_api_mode_builder_holds_its_files_in_an_emptydir(name: str) -> None:
    """No claim anywhere: the build container waits for its source, streamed into it, and
    keeps the output once built, in the emptyDir where the stream scripts expect it; one
    container, so that the pod starts no other."""
    config = configuration.parse(API)
    pod = builder(config, name)
    volumes = volumes_of(pod)
    assert volumes["transfer"] == {"name": "transfer", "emptyDir": {}}
    assert not any("persistentVolumeClaim" in volume for volume in volumes.values())
    boxes = containers_named(pod)
    assert list(boxes) == ["build"]
    mounts = {mount["mountPath"]: mount for mount in boxes["build"]["volumeMounts"]}
    assert mounts["/chaincode/input"] == {
        "name": "transfer",
        "mountPath": "/chaincode/input",
        "subPath": "input",
        "readOnly": True,
    }
    assert mounts["/chaincode/output"] == {
        "name": "transfer",
        "mountPath": "/chaincode/output",
        "subPath": "output",
    }
    assert mounts["/k8scc"] == {"name": "transfer", "mountPath": "/k8scc"}
    assert "initContainers" not in pod["spec"]
    # The wait gives up after timeouts.start, so a pod no one feeds ends; then Fabric's build,
    # whose end the container's last line tells.
    wait = [
        "/bin/sh",
        "-c",
        podscripts.WAIT_THEN_BUILD,
        "k8scc-wait",
        str(int(config.start_timeout)),
    ]
    assert boxes["build"]["args"][:5] == wait
    assert (
        boxes["build"]["args"][5:]
        == builder(configuration.parse(""), name)["spec"]["containers"][0]["args"]
    )


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_api_mode_chaincode_pod_reads_its_files_from_the_emptydir(tls: PeerTls, name: str) -> None:
    config = configuration.parse(API)
    platform = PLATFORMS[name]
    pod = chaincode_pod(config, name, tls)
    assert volumes_of(pod)["transfer"] == {"name": "transfer", "emptyDir": {}}
    assert mounts_of(pod)[platform.output_dir] == {
        "name": "transfer",
        "mountPath": platform.output_dir,
        "subPath": "input",
        "readOnly": True,
    }
    assert list(containers_named(pod)) == ["chaincode"]
    assert "initContainers" not in pod["spec"]


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_api_mode_chaincode_container_waits_for_its_files_then_runs_fabrics_command(
    tls: PeerTls, name: str
) -> None:
    """The files are streamed into the chaincode container itself: no init container whose
    exit the kubelet would notice only at its next relist. The launch command is Fabric's,
    run with exec once the files are unpacked, so the chaincode is the container's process."""
    config = configuration.parse(API)
    platform = PLATFORMS[name]
    [container] = chaincode_pod(config, name, tls)["spec"]["containers"]
    launch = platform.launch(ADDRESS)
    assert container["args"] == [
        "/bin/sh",
        "-c",
        podscripts.WAIT_THEN_EXEC,
        "k8scc-wait",
        str(int(config.start_timeout)),
        *launch,
    ]
    assert {"name": "transfer", "mountPath": podscripts.POD_DIR} in container["volumeMounts"]
    volume = configuration.parse("")
    [plain] = chaincode_pod(volume, name, tls)["spec"]["containers"]
    assert plain["args"] == launch


def test_volume_mode_pods_have_no_init_containers(plain: Config, tls: PeerTls) -> None:
    for pod in all_pods(plain, tls):
        assert "initContainers" not in pod["spec"]
