"""Configuration: defaults, overrides, and one clear error naming every bad field."""

from __future__ import annotations

import re
import string
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from k8scc import config, configfile, render, yamltext
from k8scc.errors import K8sccError
from k8scc.peer import Identity
from k8scc.platforms import PLATFORMS
from tests.unit.helpers import PROPERTY

pytestmark = pytest.mark.unit


def parse(text: str) -> config.Config:
    return config.parse(textwrap.dedent(text))


def problem(text: str | dict[str, Any]) -> str:
    """The one error message for invalid configuration."""
    source = yaml.safe_dump(text) if isinstance(text, dict) else textwrap.dedent(text)
    with pytest.raises(K8sccError) as raised:
        config.parse(source)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("configuration: ")
    return message


# --- defaults and overrides ---------------------------------------------------------------


def test_defaults_for_fabric_3_1() -> None:
    c = config.parse("")
    assert c.fabric_version == "3.1"
    assert set(c.platforms) == {"golang", "node", "java", "k8s"}
    golang, node, java = c.platforms["golang"], c.platforms["node"], c.platforms["java"]
    assert (golang.build_image, golang.run_image) == (
        "hyperledger/fabric-ccenv:3.1",
        "hyperledger/fabric-baseos:3.1",
    )
    assert (node.build_image, node.run_image) == ("hyperledger/fabric-nodeenv:2.5",) * 2
    assert (java.build_image, java.run_image) == ("hyperledger/fabric-javaenv:2.5",) * 2
    assert golang.build_env == node.build_env == java.build_env == {}
    assert (golang.run_as_user, golang.run_as_group) == (500, 500)
    assert (node.run_as_user, node.run_as_group) == (1000, 1000)
    assert (java.run_as_user, java.run_as_group) == (None, None)


def test_other_defaults() -> None:
    c = config.parse("")
    assert c.path is None
    assert c.namespace is None
    assert c.kubeconfig is None
    assert c.kubernetes_server == "https://kubernetes.default.svc"
    assert c.service_account_dir == Path("/var/run/secrets/kubernetes.io/serviceaccount")
    assert c.peer_id is None and c.peer_pod_name is None
    assert c.owner_references is True
    assert c.transfer_claim == "k8scc-transfer"
    assert c.transfer_mount_path == Path("/var/lib/k8scc/transfer")
    assert (c.transfer_mode, c.transfer_max_bytes) == ("volume", 2 * 1024**3)
    assert c.build_env == {}
    assert c.builder_resources == config.Resources({}, {})
    assert c.chaincode_resources == config.Resources({}, {})
    assert c.chaincode_logging == {}
    assert (c.build_timeout, c.start_timeout, c.stuck_timeout) == (280.0, 180.0, 20.0)
    assert c.termination_grace == 2
    assert c.image_pull_policy == "IfNotPresent"
    assert c.node_selector == {} and c.tolerations == [] and c.affinity == {}
    assert c.image_pull_secrets == [] and c.service_account_name is None
    assert c.labels == {} and c.annotations == {}
    assert c.debug is False


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}", "~"])
def test_empty_documents_give_defaults(text: str) -> None:
    assert config.parse(text) == config.parse("")


def test_unquoted_fabric_version_is_refused_as_yaml_reads_3_10_as_3_1() -> None:
    with pytest.raises(K8sccError, match="fabricVersion: expected a string"):
        config.parse("fabricVersion: 3.10\n")


@pytest.mark.parametrize("version", ["'2.5'", '"2.5"'])
def test_defaults_for_fabric_2_5(version: str) -> None:
    c = config.parse(f"fabricVersion: {version}\n")
    assert c.fabric_version == "2.5"
    images = {(p.build_image, p.run_image) for n, p in c.platforms.items() if n != "k8s"}
    assert images == {
        ("hyperledger/fabric-ccenv:2.5", "hyperledger/fabric-baseos:2.5"),
        ("hyperledger/fabric-nodeenv:2.5", "hyperledger/fabric-nodeenv:2.5"),
        ("hyperledger/fabric-javaenv:2.5", "hyperledger/fabric-javaenv:2.5"),
    }


def test_default_images_function() -> None:
    assert config.default_images("3.0")["node"] == ("hyperledger/fabric-nodeenv:2.5",) * 2
    assert config.default_images("2.5")["golang"][0] == "hyperledger/fabric-ccenv:2.5"


def test_every_field_can_be_set() -> None:
    c = parse(
        """
        namespace: fabric
        kubeconfig: /etc/k8scc/kubeconfig
        kubernetesServer: https://10.0.0.1:6443
        serviceAccountDir: /sa
        fabricVersion: "2.5"
        peer:
          id: peer0.org1
          podName: peer0-0
          ownerReferences: false
        transfer:
          mode: api
          maxSize: 500Mi
          claimName: cc-transfer
          mountPath: /transfer
        platforms:
          golang:
            buildImage: registry.local/ccenv:2.5.16
            runImage: registry.local/baseos:2.5.16
            buildEnv: {GOPROXY: "https://goproxy.local", GOSUMDB: "off"}
            runAsUser: 1001
            runAsGroup: 1002
        buildEnv:
          HTTPS_PROXY: http://proxy:3128
        builder:
          resources:
            requests: {cpu: 500m, memory: 1Gi}
            limits: {memory: 2Gi}
        chaincode:
          resources:
            requests: {cpu: "0.1"}
            limits: {cpu: 2, memory: 512Mi}
          logging: {level: debug, shim: warning, format: "%{message}"}
          terminationGracePeriodSeconds: 30
        timeouts: {build: 10m, start: 90s, stuck: 1500ms}
        pod:
          nodeSelector: {kubernetes.io/os: linux}
          tolerations: [{key: dedicated, operator: Equal, value: fabric, effect: NoSchedule}]
          affinity: {nodeAffinity: {}}
          imagePullSecrets: [regcred]
          imagePullPolicy: Always
          serviceAccountName: chaincode
          labels: {team: blue}
          annotations: {example.com/note: "any text: at all"}
        debug: true
        """
    )
    assert c.namespace == "fabric"
    assert c.kubeconfig == Path("/etc/k8scc/kubeconfig")
    assert c.kubernetes_server == "https://10.0.0.1:6443"
    assert c.service_account_dir == Path("/sa")
    assert c.fabric_version == "2.5"
    assert (c.peer_id, c.peer_pod_name, c.owner_references) == ("peer0.org1", "peer0-0", False)
    assert (c.transfer_claim, c.transfer_mount_path) == ("cc-transfer", Path("/transfer"))
    assert (c.transfer_mode, c.transfer_max_bytes) == ("api", 500 * 1024**2)
    golang = c.platforms["golang"]
    assert golang.build_image == "registry.local/ccenv:2.5.16"
    assert golang.run_image == "registry.local/baseos:2.5.16"
    assert golang.build_env == {"GOPROXY": "https://goproxy.local", "GOSUMDB": "off"}
    assert (golang.run_as_user, golang.run_as_group) == (1001, 1002)
    assert c.platforms["node"].build_image == "hyperledger/fabric-nodeenv:2.5"
    assert c.build_env == {"HTTPS_PROXY": "http://proxy:3128"}
    assert c.builder_resources == config.Resources(
        {"cpu": "500m", "memory": "1Gi"}, {"memory": "2Gi"}
    )
    assert c.chaincode_resources == config.Resources(
        {"cpu": "0.1"}, {"cpu": "2", "memory": "512Mi"}
    )
    assert c.chaincode_logging == {
        "CORE_CHAINCODE_LOGGING_LEVEL": "debug",
        "CORE_CHAINCODE_LOGGING_SHIM": "warning",
        "CORE_CHAINCODE_LOGGING_FORMAT": "%{message}",
    }
    assert c.termination_grace == 30
    assert (c.build_timeout, c.start_timeout, c.stuck_timeout) == (600.0, 90.0, 1.5)
    assert c.node_selector == {"kubernetes.io/os": "linux"}
    assert c.tolerations == [
        {"key": "dedicated", "operator": "Equal", "value": "fabric", "effect": "NoSchedule"}
    ]
    assert c.affinity == {"nodeAffinity": {}}
    assert c.image_pull_secrets == ["regcred"]
    assert c.image_pull_policy == "Always"
    assert c.service_account_name == "chaincode"
    assert c.labels == {"team": "blue"}
    assert c.annotations == {"example.com/note": "any text: at all"}
    assert c.debug is True


def test_overriding_one_image_keeps_the_other_default() -> None:
    c = parse(
        """
        platforms:
          java:
            runImage: my/javaenv:custom
        """
    )
    java = c.platforms["java"]
    assert (java.build_image, java.run_image) == (
        "hyperledger/fabric-javaenv:2.5",
        "my/javaenv:custom",
    )


@pytest.mark.parametrize("disabled", ["golang", "node", "java", "k8s"])
def test_null_disables_a_platform(disabled: str) -> None:
    c = config.parse(f"platforms:\n  {disabled}: null\n")
    assert disabled not in c.platforms
    assert set(c.platforms) == {"golang", "node", "java", "k8s"} - {disabled}


def test_empty_platform_section_keeps_defaults() -> None:
    c = config.parse("platforms:\n  golang: {}\n")
    assert c.platforms == config.parse("").platforms


def _builder_env(text: str, platform: str) -> dict[str, str]:
    parsed = config.parse(text)
    pod = render.builder_pod(
        parsed, PLATFORMS[platform], "p", "label", "name", Identity("peer"), "dir"
    )
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def test_golang_build_env_keeps_goproxy_unless_overridden() -> None:
    added = _builder_env("platforms:\n  golang:\n    buildEnv: {GOSUMDB: 'off'}\n", "golang")
    assert added["GOPROXY"] == "https://proxy.golang.org"
    assert added["GOSUMDB"] == "off"
    common = _builder_env("buildEnv: {GOPROXY: https://mirror.example}\n", "golang")
    assert common["GOPROXY"] == "https://mirror.example"
    specific = _builder_env(
        "buildEnv: {GOPROXY: a}\nplatforms:\n  golang:\n    buildEnv: {GOPROXY: direct}\n", "golang"
    )
    assert specific["GOPROXY"] == "direct"
    assert "GOPROXY" not in _builder_env("", "node")


def test_numbers_in_string_maps_become_strings() -> None:
    c = config.parse("buildEnv: {RETRIES: 3, RATIO: 0.5}\npod:\n  annotations: {n: 1}\n")
    assert c.build_env == {"RETRIES": "3", "RATIO": "0.5"}
    assert c.annotations == {"n": "1"}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("1.5m", 90.0), (45, 45.0)],
)
def test_durations(value: str | int, seconds: float) -> None:
    assert config.parse(yaml.safe_dump({"timeouts": {"build": value}})).build_timeout == seconds


# --- invalid input ----------------------------------------------------------------------------

INVALID: list[tuple[str, str]] = [
    # unknown keys, top level and nested
    ("bogus: 1", "bogus: unknown key"),
    ("Namespace: x", "Namespace: unknown key"),
    ("peer:\n  idd: x", "peer.idd: unknown key"),
    ("transfer:\n  path: /x", "transfer.path: unknown key"),
    ("platforms:\n  python: {}", "platforms.python: unknown key"),
    ("platforms:\n  golang:\n    image: x", "platforms.golang.image: unknown key"),
    ("builder:\n  resources:\n    limit: {}", "builder.resources.limit: unknown key"),
    ("chaincode:\n  logging:\n    colour: red", "chaincode.logging.colour: unknown key"),
    ("timeouts:\n  install: 5m", "timeouts.install: unknown key"),
    ("pod:\n  hostNetwork: true", "pod.hostNetwork: unknown key"),
    # wrong types
    ("[1, 2]", "expected a mapping, got a list"),
    ("namespace: 5", "namespace: expected a string, got a number"),
    ("peer: [a]", "peer: expected a mapping, got a list"),
    ("peer: text", "peer: expected a mapping, got a string"),
    ("peer:\n  id: 7", "peer.id: expected a string"),
    ("peer:\n  ownerReferences: 'no'", "peer.ownerReferences: expected a boolean, got a string"),
    ("debug: 1", "debug: expected a boolean"),
    (
        "platforms:\n  golang:\n    runAsUser: '500'",
        'platforms.golang.runAsUser: must be a user id or "image"',
    ),
    ("platforms:\n  golang:\n    runAsUser: true", "platforms.golang.runAsUser: expected an"),
    (
        "platforms:\n  java:\n    runAsGroup: 500",
        'platforms.java.runAsGroup: needs a runAsUser other than "image"',
    ),
    ("platforms:\n  node:\n    buildImage: 3", "platforms.node.buildImage: expected a string"),
    ("platforms: [golang]", "platforms: expected a mapping"),
    ("buildEnv: [A]", "buildEnv: expected a mapping"),
    ("buildEnv:\n  A: [1]", "buildEnv.A: expected a string, got a list"),
    ("buildEnv:\n  A: true", "buildEnv.A: expected a string"),
    ("pod:\n  tolerations: {key: x}", "pod.tolerations: expected a list"),
    ("pod:\n  tolerations: [x]", "pod.tolerations[0]: expected a mapping"),
    ("pod:\n  affinity: [x]", "pod.affinity: expected a mapping"),
    ("pod:\n  labels: [a]", "pod.labels: expected a mapping"),
    ("pod:\n  imagePullSecrets: regcred", "pod.imagePullSecrets: expected a list"),
    ("pod:\n  imagePullSecrets: [Bad_Name]", "pod.imagePullSecrets[0]"),
    ("pod:\n  imagePullSecrets: [{name: x}]", "pod.imagePullSecrets[0]"),
    ("chaincode:\n  terminationGracePeriodSeconds: 301", "chaincode.terminationGracePeriodSeconds"),
    ("chaincode:\n  terminationGracePeriodSeconds: -1", "chaincode.terminationGracePeriodSeconds"),
    ("chaincode:\n  logging:\n    level: [x]", "chaincode.logging.level: expected a string"),
    # quantities
    (
        "builder:\n  resources:\n    limits:\n      memory: 1.5.5Gi",
        "builder.resources.limits.memory",
    ),
    ("chaincode:\n  resources:\n    requests:\n      cpu: abc", "chaincode.resources.requests.cpu"),
    (
        "builder:\n  resources:\n    requests:\n      memory: 1 Gi",
        "builder.resources.requests.memory",
    ),
    (
        "builder:\n  resources:\n    requests:\n      memory: 1GB",
        "builder.resources.requests.memory",
    ),
    ("builder:\n  resources:\n    requests:\n      cpu: -1", "builder.resources.requests.cpu"),
    ("builder:\n  resources: [cpu]", "builder.resources: expected a mapping"),
    # durations
    ("timeouts:\n  build: 5 minutes", "timeouts.build: invalid duration"),
    ("timeouts:\n  build: 10d", "timeouts.build: invalid duration"),
    ("timeouts:\n  start: -5s", "timeouts.start: invalid duration"),
    ("timeouts:\n  stuck: 0", "timeouts.stuck: must be positive"),
    ("timeouts:\n  stuck: 0s", "timeouts.stuck: must be positive"),
    ("timeouts:\n  stuck: -3", "timeouts.stuck: must be positive"),
    ("timeouts:\n  build: true", "timeouts.build: expected"),
    # ids
    ("platforms:\n  golang:\n    runAsUser: 0", "platforms.golang.runAsUser: must be a non-zero"),
    ("platforms:\n  node:\n    runAsUser: -1", "platforms.node.runAsUser: must be a non-zero"),
    ("platforms:\n  java:\n    runAsGroup: 0", "platforms.java.runAsGroup: must be a non-zero"),
    # label keys and values
    ("pod:\n  labels:\n    '-bad': x", "pod.labels.-bad: invalid label or annotation key"),
    ("pod:\n  labels:\n    a/b/c: x", "pod.labels.a/b/c: invalid label or annotation key"),
    ("pod:\n  labels:\n    Example.com/x: y", "pod.labels.Example.com/x: invalid label"),
    ("pod:\n  labels:\n    team_: y", "pod.labels.team_: invalid label or annotation key"),
    ("pod:\n  labels:\n    team: blue green", "pod.labels.team: invalid label value"),
    ("pod:\n  labels:\n    team: -blue", "pod.labels.team: invalid label value"),
    (f"pod:\n  labels:\n    team: {'x' * 64}", "pod.labels.team: invalid label value"),
    ("pod:\n  nodeSelector:\n    'a b': x", "pod.nodeSelector.a b: invalid label"),
    ("pod:\n  nodeSelector:\n    zone: a/b", "pod.nodeSelector.zone: invalid label value"),
    ("pod:\n  annotations:\n    'bad key': x", "pod.annotations.bad key: invalid label"),
    # enumerations and names
    ("pod:\n  imagePullPolicy: Sometimes", "pod.imagePullPolicy: must be Always, IfNotPresent"),
    ("pod:\n  imagePullPolicy: always", "pod.imagePullPolicy: must be Always"),
    ("namespace: Fabric_NS", "namespace: 'Fabric_NS' is not a valid DNS label"),
    ("kubernetesServer: http://api:6443", "kubernetesServer: must be an https:// URL"),
    ("transfer:\n  mountPath: relative/dir", "transfer.mountPath: must be an absolute path"),
    ("transfer:\n  claimName: Transfer", "transfer.claimName"),
    ("transfer:\n  mode: exec", "transfer.mode: must be volume or api"),
    ("transfer:\n  maxSize: lots", "transfer.maxSize: invalid size 'lots'"),
    ("transfer:\n  maxSize: 0", "transfer.maxSize"),
    ("peer:\n  podName: peer 0", "peer.podName"),
    ("pod:\n  serviceAccountName: cc_sa", "pod.serviceAccountName"),
    ("platforms:\n  golang:\n    buildImage: 'ccenv 3.1'", "platforms.golang.buildImage: invalid"),
    ("platforms:\n  golang:\n    runImage: ''", "platforms.golang.runImage: invalid image"),
    ("buildEnv:\n  1BAD: x", "buildEnv.1BAD: invalid environment variable name"),
    ("platforms:\n  golang:\n    buildEnv: {'A B': x}", "platforms.golang.buildEnv.A B: invalid"),
]


@pytest.mark.parametrize(("text", "expected"), INVALID, ids=[e for _, e in INVALID])
def test_invalid_input_names_the_field(text: str, expected: str) -> None:
    assert expected in problem(text)


def test_unknown_key_lists_the_known_ones() -> None:
    message = problem("peer:\n  idd: x")
    assert "(known: id, ownerReferences, podName)" in message


def test_invalid_yaml_names_the_line() -> None:
    message = problem("namespace: fabric\npod:\n  labels: [a, b\ntimeouts: {}\n")
    assert "not valid YAML" in message
    assert "line 4" in message


def test_invalid_yaml_with_tab_indentation() -> None:
    message = problem("peer:\n\tid: x\n")
    assert "not valid YAML at line 2" in message


def test_several_problems_are_listed_together() -> None:
    message = problem(
        """
        namespace: 5
        bogus: true
        timeouts:
          build: soon
        platforms:
          golang:
            runAsUser: 0
        pod:
          imagePullPolicy: Sometimes
        """
    )
    for field in (
        "namespace: expected",
        "bogus: unknown key",
        "timeouts.build: invalid duration",
        "platforms.golang.runAsUser: must be",
        "pod.imagePullPolicy: must be",
    ):
        assert field in message
    assert message.count("; ") == 4


def test_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "k8scc.yaml"
    path.write_text("namespace: 5\n")
    with pytest.raises(K8sccError, match=rf"^{re.escape(str(path))}: namespace: expected a str"):
        config.load(path)


# --- load (locating and reading the file: test_configfile.py) ---------------------------------


def test_load_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "k8scc.yaml"
    path.write_text("namespace: fabric\n")
    loaded = config.load(path)
    assert loaded.namespace == "fabric"
    assert loaded.path == path


def test_load_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "k8scc.yaml"
    with pytest.raises(K8sccError) as raised:
        config.load(path)
    message = str(raised.value)
    assert str(path) in message
    assert "not found" in message
    assert configfile.CONFIG_ENV in message
    assert "\n" not in message


def test_load_of_an_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(
        K8sccError, match=rf"cannot read configuration file {re.escape(str(tmp_path))}"
    ):
        config.load(tmp_path)


# --- properties -------------------------------------------------------------------------------

KNOWN: dict[str, set[str]] = {
    "": set(config._TOP),
    "peer": {"id", "podName", "ownerReferences"},
    "transfer": {"mode", "claimName", "mountPath", "maxSize"},
    "platforms": {"golang", "node", "java"},
    "platforms.golang": {"buildImage", "runImage", "buildEnv", "runAsUser", "runAsGroup"},
    "platforms.java": {"buildImage", "runImage", "buildEnv", "runAsUser", "runAsGroup"},
    "builder": {"resources"},
    "builder.resources": {"requests", "limits"},
    "chaincode": {"resources", "logging", "terminationGracePeriodSeconds"},
    "chaincode.logging": {"level", "shim", "format"},
    "timeouts": {"build", "start", "stuck"},
    "pod": {
        "nodeSelector", "tolerations", "affinity", "imagePullSecrets", "imagePullPolicy",
        "serviceAccountName", "labels", "annotations",
    },
}  # fmt: skip

key_text = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + "_-éß"), min_size=1, max_size=20
)
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(key_text, inner, max_size=3),
    max_leaves=5,
)


def nest(section: str, content: dict[str, Any]) -> dict[str, Any]:
    for part in reversed([p for p in section.split(".") if p]):
        content = {part: content}
    return content


@PROPERTY
@given(
    section=st.sampled_from(sorted(KNOWN)),
    unknown=st.dictionaries(key_text, yaml_values, min_size=1, max_size=4),
)
def test_property_unknown_keys_are_rejected(section: str, unknown: dict[str, Any]) -> None:
    unknown = {k: v for k, v in unknown.items() if k not in KNOWN[section]}
    if not unknown:
        unknown = {"zzUnknown": 1}
    message = problem(nest(section, unknown))
    for key in unknown:
        assert f"{section}.{key}: unknown key".lstrip(".") in message


_SUFFIXES = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"]
quantities = st.builds(
    lambda sign, whole, fraction, suffix: f"{sign}{whole}{fraction}{suffix}",
    st.sampled_from(["", "+"]),
    st.integers(min_value=0, max_value=10**12).map(str),
    st.sampled_from(["", "."]) | st.integers(0, 999).map(lambda n: f".{n}"),
    st.sampled_from(_SUFFIXES) | st.integers(-30, 30).map(lambda n: f"e{n}"),
)


@PROPERTY
@given(quantity=quantities, where=st.sampled_from(["builder", "chaincode"]))
def test_property_valid_quantities_are_accepted(quantity: str, where: str) -> None:
    text = yaml.safe_dump(
        {where: {"resources": {"requests": {"memory": quantity}, "limits": {"cpu": quantity}}}}
    )
    parsed = config.parse(text)
    resources = parsed.builder_resources if where == "builder" else parsed.chaincode_resources
    assert resources == config.Resources({"memory": quantity}, {"cpu": quantity})


@PROPERTY
@given(quantity=quantities, junk=st.sampled_from(["x", "/", "..", "-", " 1", "@", "iB"]))
def test_property_quantities_with_junk_are_rejected(quantity: str, junk: str) -> None:
    message = problem({"builder": {"resources": {"limits": {"memory": quantity + junk}}}})
    assert "builder.resources.limits.memory: invalid quantity" in message


# Keys the parser knows, anywhere, so generated documents reach past the unknown-key checks.
_VOCABULARY = sorted(set().union(*KNOWN.values(), {"requests", "limits", "cpu", "memory"}))
yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["5s", "1.5m", "0s", "-1", "500m", "1Gi", "3.1", "Always", "/t", "https://x"])
)
config_documents = st.recursive(
    yaml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_VOCABULARY) | key_text, inner, max_size=5)
    ),
    max_leaves=25,
)


@PROPERTY
@given(document=config_documents)
def test_property_any_document_gives_a_config_or_one_k8scc_error(document: Any) -> None:
    try:
        parsed = config.parse(yaml.safe_dump(document))
    except K8sccError as error:
        assert "\n" not in str(error)
    else:
        assert isinstance(parsed, config.Config)


@PROPERTY
@given(text=st.text(max_size=200))
def test_property_any_text_gives_a_config_or_one_k8scc_error(text: str) -> None:
    try:
        parsed = config.parse(text)
    except K8sccError as error:
        assert "\n" not in str(error)
    else:
        assert isinstance(parsed, config.Config)


def test_yaml_errors_without_a_position_are_one_line() -> None:
    message = problem("namespace: a\x1fb\n")
    assert "not valid YAML: unacceptable character #x001f" in message


def test_run_as_user_image_leaves_the_ids_to_the_image_and_java_may_take_an_id() -> None:
    golang = config.parse("platforms:\n  golang:\n    runAsUser: image\n").platforms["golang"]
    assert (golang.run_as_user, golang.run_as_group) == (None, None)
    java = config.parse("platforms:\n  java:\n    runAsUser: 500\n").platforms["java"]
    assert (java.run_as_user, java.run_as_group) == (500, 500)
    grouped = config.parse("platforms:\n  java:\n    runAsUser: 7\n    runAsGroup: 8\n")
    assert (grouped.platforms["java"].run_as_user, grouped.platforms["java"].run_as_group) == (7, 8)


def test_yaml_is_read_through_libyaml_when_pyyaml_has_it() -> None:
    """Parsing the kubeconfig and k8scc.yaml is on every launch's way to its pod."""
    assert yaml.__with_libyaml__
    assert yamltext.LOADER is yaml.CSafeLoader


def test_libyaml_reads_a_document_as_the_python_loader_does() -> None:
    text = (
        "a: &x {b: [1, 2.5, true, null, '3', 0o17, 0x1f]}\n"
        "c: *x\n"
        "d: |\n  two\n  lines\n"
        "e: 2026-12-06\n"
        "f: !!binary aGk=\n"
    )
    assert yamltext.load(text, "here") == yaml.safe_load(text)
