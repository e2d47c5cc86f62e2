"""k8scc's configuration: one YAML file, validated at load with one clear error per problem.

configfile.py finds the file and reads it. Every field, its default and its meaning is
documented in docs/configuration.md.
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from k8scc import buildcache, configfile, configrecord
from k8scc import record as records
from k8scc.errors import K8sccError
from k8scc.platforms import PLATFORMS

DEFAULT_FABRIC_VERSION = "3.1"

_QUANTITY = re.compile(
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$"
)
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# runAsUser's value for "as the image says", which fabric-javaenv needs (see platforms.py).
IMAGE_USER = "image"


@records.record
class PlatformConfig:
    build_image: str
    run_image: str
    build_env: dict[str, str]
    # None: the image's own user (IMAGE_USER in the configuration).
    run_as_user: int | None
    run_as_group: int | None
    # runAsNonRoot: always with a uid of k8scc's choosing, and for the image's own user where
    # the platform forbids root (platforms.Platform.image_user_non_root).
    non_root: bool


@records.record
class BuildCache:
    claim: str
    scope: str
    # Per platform directory, in KiB as the pruning script counts.
    max_kib: int


@records.record
class Resources:
    requests: dict[str, str]
    limits: dict[str, str]


@records.record
class PodOverrides:
    """What a rule changes for one kind of pod; None or empty: unchanged."""

    resources: Resources = records.field(default_factory=lambda: Resources({}, {}))
    env: dict[str, str] = records.field(default_factory=dict)
    env_from: list[dict[str, Any]] | None = None
    node_selector: dict[str, str] = records.field(default_factory=dict)
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    labels: dict[str, str] = records.field(default_factory=dict)
    annotations: dict[str, str] = records.field(default_factory=dict)
    host_aliases: list[dict[str, Any]] | None = None
    service_account_name: str | None = None
    image: str | None = None
    run_as_user: int | str | None = None  # IMAGE_USER: the image's own user
    run_as_group: int | None = None
    termination_grace: int | None = None
    timeout: float | None = None  # the build's timeout, or the chaincode's start timeout


@records.record
class Rule:
    index: int  # its place in the `chaincodes` list, as messages name it
    label: str | None
    package_id: str | None
    builder: PodOverrides | None
    chaincode: PodOverrides | None

    def matches(self, label: str, package_id: str | None) -> bool:
        if self.label is not None and not fnmatchcase(label, self.label):
            return False
        if self.package_id is not None:
            return package_id is not None and fnmatchcase(package_id, self.package_id)
        return True


@records.record
class Config:
    path: Path | None
    namespace: str | None
    kubeconfig: Path | None
    kubernetes_server: str
    service_account_dir: Path
    fabric_version: str
    peer_id: str | None
    peer_pod_name: str | None
    owner_references: bool
    transfer_mode: str
    transfer_claim: str
    transfer_mount_path: Path
    transfer_max_bytes: int
    build_cache: BuildCache | None
    platforms: dict[str, PlatformConfig]
    build_env: dict[str, str]
    builder_resources: Resources
    chaincode_resources: Resources
    chaincode_logging: dict[str, str]
    build_timeout: float
    start_timeout: float
    stuck_timeout: float
    leftover_age: float
    termination_grace: int
    image_pull_policy: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    affinity: dict[str, Any]
    image_pull_secrets: list[str]
    service_account_name: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    chaincode_env: dict[str, str] = records.field(default_factory=dict)
    env_from: list[dict[str, Any]] = records.field(default_factory=list)
    host_aliases: list[dict[str, Any]] = records.field(default_factory=list)
    rules: tuple[Rule, ...] = ()
    debug: bool = False


def default_images(fabric_version: str) -> dict[str, tuple[str, str]]:
    """(build image, run image) per platform: the images Fabric's own Docker builder uses.

    Fabric 3.x publishes no nodeenv or javaenv images of its own; its sample core.yaml uses 2.5.
    """
    env_version = "2.5" if fabric_version.startswith("3") else fabric_version
    return {
        "golang": (
            f"hyperledger/fabric-ccenv:{fabric_version}",
            f"hyperledger/fabric-baseos:{fabric_version}",
        ),
        "node": (f"hyperledger/fabric-nodeenv:{env_version}",) * 2,
        "java": (f"hyperledger/fabric-javaenv:{env_version}",) * 2,
    }


class _Reader:
    """Walks the parsed YAML, collecting one message per problem rather than stopping early."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def section(self, data: Any, where: str, known: set[str]) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.errors.append(f"{where}: expected a mapping, got {kind_of(data)}")
            return {}
        for key in data:
            if key not in known:
                hint = f" (known: {', '.join(sorted(known))})" if known else ""
                self.errors.append(f"{where}.{key}: unknown key{hint}".lstrip("."))
        return data

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        where: str,
        kind: type | tuple[type, ...],
        default: Any,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        name = f"{where}.{key}".lstrip(".")
        if key not in data or data[key] is None:
            return default
        value = data[key]
        expected = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in expected:
            self.errors.append(f"{name}: expected {_names(expected)}, got a boolean")
            return default
        if not isinstance(value, expected):
            self.errors.append(f"{name}: expected {_names(expected)}, got {kind_of(value)}")
            return default
        problem = check(value) if check else None
        if problem:
            self.errors.append(f"{name}: {problem}")
            return default
        return value

    def string_map(
        self,
        data: Mapping[str, Any],
        key: str,
        where: str,
        check_key: Callable[[str], str | None] | None = None,
        check_value: Callable[[str], str | None] | None = None,
    ) -> dict[str, str]:
        raw = self.get(data, key, where, dict, {})
        result: dict[str, str] = {}
        for k, v in raw.items():
            name = f"{where}.{key}.{k}".lstrip(".")
            if not isinstance(k, str):
                self.errors.append(f"{name}: keys must be strings")
                continue
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                self.errors.append(f"{name}: expected a string, got {kind_of(v)}")
                continue
            problem = (check_key(k) if check_key else None) or (
                check_value(str(v)) if check_value else None
            )
            if problem:
                self.errors.append(f"{name}: {problem}")
                continue
            result[k] = str(v)
        return result

    def duration(self, data: Mapping[str, Any], key: str, where: str, default: float) -> float:
        raw = self.get(data, key, where, (str, int, float), None)
        if raw is None:
            return default
        if isinstance(raw, (int, float)):
            seconds = float(raw)
        else:
            match = _DURATION.fullmatch(raw.strip())
            if not match:
                self.errors.append(
                    f"{where}.{key}: invalid duration {raw!r} (use e.g. 90s, 5m, 1h)".lstrip(".")
                )
                return default
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if not math.isfinite(seconds) or seconds <= 0:
            self.errors.append(f"{where}.{key}: must be positive".lstrip("."))
            return default
        return seconds

    def resources(self, data: Mapping[str, Any], where: str) -> Resources:
        section = self.section(data.get("resources"), f"{where}.resources", {"requests", "limits"})
        requests = self.string_map(
            section, "requests", f"{where}.resources", check_value=_check_quantity
        )
        limits = self.string_map(
            section, "limits", f"{where}.resources", check_value=_check_quantity
        )
        return Resources(requests, limits)


def kind_of(value: Any) -> str:
    """A YAML value's type as an error message names it."""
    # bool first: it is an int too. Subclasses count: a round-trip loader's maps are dicts.
    kinds = ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"), (str, "a string"))
    for kind, name in (*kinds, (int, "a number"), (float, "a number")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _names(kinds: tuple[type, ...]) -> str:
    words = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        dict: "a mapping",
        list: "a list",
    }
    return " or ".join(dict.fromkeys(words.get(k, k.__name__) for k in kinds))


def _check_quantity(value: str) -> str | None:
    return (
        None if _QUANTITY.fullmatch(value) else f"invalid quantity {value!r} (use e.g. 500m, 1Gi)"
    )


def _check_label_key(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if _LABEL_KEY.fullmatch(key) and len(name) <= 63 and len(prefix) <= 253:
        return None
    return "invalid label or annotation key"


def _check_label_value(value: str) -> str | None:
    return (
        None
        if _LABEL_VALUE.fullmatch(value) and len(value) <= 63
        else f"invalid label value {value!r}"
    )


def _check_env_name(name: str) -> str | None:
    return None if _ENV_NAME.fullmatch(name) else "invalid environment variable name"


def _check_dns_label(value: str) -> str | None:
    return (
        None
        if _DNS_LABEL.fullmatch(value) and len(value) <= 63
        else f"{value!r} is not a valid DNS label"
    )


def _check_dns_name(value: str) -> str | None:
    parts = value.split(".")
    if len(value) > 253 or any(_check_dns_label(p) for p in parts):
        return f"{value!r} is not a valid Kubernetes object name"
    return None


def _check_image(value: str) -> str | None:
    return None if value.strip() and " " not in value else f"invalid image reference {value!r}"


def _check_id(value: int) -> str | None:
    return None if value > 0 else "must be a non-zero user or group id (pods run as non-root)"


def _check_user(value: int | str) -> str | None:
    if isinstance(value, str):
        return (
            None if value == IMAGE_USER else f'must be a user id or "{IMAGE_USER}", not {value!r}'
        )
    return _check_id(value)


_TOP = {
    "namespace", "kubeconfig", "kubernetesServer", "serviceAccountDir", "fabricVersion", "peer",
    "transfer", "buildCache", "platforms", "buildEnv", "builder", "chaincode", "pod", "timeouts",
    "chaincodes", "debug",
}  # fmt: skip
_OVERRIDES = {
    "resources", "env", "envFrom", "nodeSelector", "tolerations", "affinity", "labels",
    "annotations", "hostAliases", "serviceAccountName", "image", "runAsUser", "runAsGroup",
    "terminationGracePeriodSeconds", "timeout",
}  # fmt: skip
# What k8scc itself gives chaincode: its identity, TLS files and home.
_CHAINCODE_ENV_OWNED = {
    "CORE_CHAINCODE_ID_NAME", "CORE_PEER_ADDRESS", "CORE_PEER_TLS_ENABLED",
    "CORE_PEER_LOCALMSPID", "CORE_TLS_CLIENT_KEY_PATH", "CORE_TLS_CLIENT_CERT_PATH",
    "CORE_TLS_CLIENT_KEY_FILE", "CORE_TLS_CLIENT_CERT_FILE", "CORE_PEER_TLS_ROOTCERT_FILE",
    "HOME",
}  # fmt: skip
# Label keys k8scc sets and selects its pods by.
_OWN_LABELS = {"app.kubernetes.io/managed-by", "app.kubernetes.io/component"}
_OWN_PREFIX = "k8scc.hyperledger.org/"


def _check_own_key(key: str) -> str | None:
    if key in _OWN_LABELS or key.startswith(_OWN_PREFIX):
        return "k8scc's own key, which it sets itself"
    return _check_label_key(key)


def _check_chaincode_env(name: str) -> str | None:
    return _check_env_name(name) or ("set by k8scc" if name in _CHAINCODE_ENV_OWNED else None)


def _check_pattern(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _check_grace(value: int) -> str | None:
    return None if 0 <= value <= 300 else "must be between 0 and 300"


def _mappings(r: _Reader, data: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    items = r.get(data, key, where, list, [])
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            r.errors.append(f"{where}.{key}[{index}]: expected a mapping, got {kind_of(item)}")
    return [item for item in items if isinstance(item, dict)]


def _env_from(r: _Reader, data: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    sources = _mappings(r, data, "envFrom", where)
    for index, source in enumerate(sources):
        at = f"{where}.envFrom[{index}]"
        r.section(source, at, {"secretRef", "configMapRef", "prefix"})
        refs = [k for k in ("secretRef", "configMapRef") if k in source]
        if len(refs) != 1:
            r.errors.append(f"{at}: needs exactly one of secretRef, configMapRef")
            continue
        ref = r.section(source[refs[0]], f"{at}.{refs[0]}", {"name", "optional"})
        if r.get(ref, "name", f"{at}.{refs[0]}", str, None, _check_dns_name) is None:
            r.errors.append(f"{at}.{refs[0]}.name: needed")
        r.get(ref, "optional", f"{at}.{refs[0]}", bool, False)
        r.get(source, "prefix", at, str, "", lambda v: _check_env_name(v) if v else None)
    return sources


def _check_ip(value: str) -> str | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
            return None
        except OSError:
            continue
    return f"{value!r} is not an IP address"


def _host_aliases(r: _Reader, data: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    aliases = _mappings(r, data, "hostAliases", where)
    for index, alias in enumerate(aliases):
        at = f"{where}.hostAliases[{index}]"
        r.section(alias, at, {"ip", "hostnames"})
        if r.get(alias, "ip", at, str, None, _check_ip) is None:
            r.errors.append(f"{at}.ip: needed")
        hostnames = r.get(alias, "hostnames", at, list, [])
        if not hostnames or any(not isinstance(h, str) or _check_dns_name(h) for h in hostnames):
            r.errors.append(f"{at}.hostnames: expected a list of DNS names")
    return aliases


def _overrides(r: _Reader, data: Any, where: str, step: str) -> PodOverrides | None:
    if data is None:
        return None
    section = r.section(data, where, _OVERRIDES)
    env_check = _check_env_name if step == "build" else _check_chaincode_env
    return PodOverrides(
        resources=r.resources(section, where),
        env=r.string_map(section, "env", where, env_check),
        env_from=_env_from(r, section, where) if "envFrom" in section else None,
        node_selector=r.string_map(
            section, "nodeSelector", where, _check_label_key, _check_label_value
        ),
        tolerations=_mappings(r, section, "tolerations", where)
        if "tolerations" in section
        else None,
        affinity=r.get(section, "affinity", where, dict, None),
        labels=r.string_map(section, "labels", where, _check_own_key, _check_label_value),
        annotations=r.string_map(section, "annotations", where, _check_own_key),
        host_aliases=_host_aliases(r, section, where) if "hostAliases" in section else None,
        service_account_name=r.get(
            section, "serviceAccountName", where, str, None, _check_dns_name
        ),
        image=r.get(section, "image", where, str, None, _check_image),
        run_as_user=r.get(section, "runAsUser", where, (int, str), None, _check_user),
        run_as_group=r.get(section, "runAsGroup", where, int, None, _check_id),
        termination_grace=r.get(
            section, "terminationGracePeriodSeconds", where, int, None, _check_grace
        ),
        timeout=r.duration(section, "timeout", where, 0.0) or None,
    )


def _rules(r: _Reader, top: Mapping[str, Any]) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for index, raw in enumerate(_mappings(r, top, "chaincodes", "")):
        where = f"chaincodes[{index}]"
        rule = r.section(raw, where, {"match", "builder", "chaincode"})
        match = r.section(rule.get("match"), f"{where}.match", {"label", "packageId"})
        label = r.get(match, "label", f"{where}.match", str, None, _check_pattern)
        package_id = r.get(match, "packageId", f"{where}.match", str, None, _check_pattern)
        if label is None and package_id is None:
            r.errors.append(f"{where}.match: needs label or packageId")
        if package_id is not None and rule.get("builder") is not None:
            r.errors.append(
                f"{where}.builder: a build knows no package id; match builds on label only"
            )
        rules.append(
            Rule(
                index=index,
                label=label,
                package_id=package_id,
                builder=_overrides(r, rule.get("builder"), f"{where}.builder", "build"),
                chaincode=_overrides(r, rule.get("chaincode"), f"{where}.chaincode", "run"),
            )
        )
    return tuple(rules)


# volume: a ReadWriteMany claim the peer and its pods mount; api: files stream through the
# Kubernetes API (exec), and pods hold them in emptyDirs.
TRANSFER_MODES = ("volume", "api")


def _check_size(value: str) -> str | None:
    size = buildcache.parse_size(value)
    return None if size else f"invalid size {value!r} (use e.g. 500Mi, 4Gi)"


def _build_cache(r: _Reader, section: Mapping[str, Any]) -> BuildCache | None:
    claim = r.get(section, "claimName", "buildCache", str, None, _check_dns_name)
    scope = r.get(
        section,
        "scope",
        "buildCache",
        str,
        "chaincode",
        lambda v: None if v in buildcache.SCOPES else "must be chaincode or platform",
    )
    size = r.get(section, "maxSize", "buildCache", str, "4Gi", _check_size)
    if claim is None:
        if section:
            r.errors.append("buildCache.claimName: needed to use a build cache")
        return None
    return BuildCache(claim, scope, -(-(buildcache.parse_size(size) or 0) // 1024))


def parse(text: str, path: Path | None = None) -> Config:
    """Parses and validates configuration text; raises K8sccError listing every problem."""
    return validate(_yaml_document(text, path), path)


def _yaml_document(text: str, path: Path | None) -> Any:
    # Imported here: `run` usually reads the document `build` recorded, not the YAML.
    from k8scc import yamltext  # noqa: PLC0415

    return yamltext.load(text, str(path) if path else "configuration")


def validate(data: Any, path: Path | None = None) -> Config:
    """The configuration a parsed document describes; raises K8sccError listing every
    problem."""
    where = str(path) if path else "configuration"
    r = _Reader()
    top = r.section(data if data is not None else {}, "top level", _TOP)
    fabric_version = r.get(
        top,
        "fabricVersion",
        "",
        str,
        DEFAULT_FABRIC_VERSION,
        lambda v: None if re.fullmatch(r"[0-9]+\.[0-9]+", v) else 'must be major.minor, e.g. "3.1"',
    )

    peer = r.section(top.get("peer"), "peer", {"id", "podName", "ownerReferences"})
    transfer = r.section(
        top.get("transfer"), "transfer", {"mode", "claimName", "mountPath", "maxSize"}
    )
    cache = r.section(top.get("buildCache"), "buildCache", {"claimName", "scope", "maxSize"})
    builder = r.section(top.get("builder"), "builder", {"resources"})
    chaincode = r.section(
        top.get("chaincode"), "chaincode", {"resources", "logging", "terminationGracePeriodSeconds"}
    )
    timeouts = r.section(top.get("timeouts"), "timeouts", {"build", "start", "stuck", "leftovers"})
    logging = r.section(chaincode.get("logging"), "chaincode.logging", {"level", "shim", "format"})
    pod = r.section(
        top.get("pod"),
        "pod",
        {
            "nodeSelector", "tolerations", "affinity", "imagePullSecrets", "imagePullPolicy",
            "serviceAccountName", "labels", "annotations",
        },
    )  # fmt: skip

    defaults = default_images(fabric_version)
    platforms_raw = r.section(top.get("platforms"), "platforms", set(PLATFORMS))
    platforms: dict[str, PlatformConfig] = {}
    for name, platform in PLATFORMS.items():
        if name in platforms_raw and platforms_raw[name] is None:
            continue  # explicitly disabled: detect will not claim this platform
        where_p = f"platforms.{name}"
        # A prebuilt image's package names its image itself.
        images = set() if platform.prebuilt else {"buildImage", "runImage", "buildEnv"}
        section = r.section(platforms_raw.get(name), where_p, images | {"runAsUser", "runAsGroup"})
        build_image, run_image = defaults.get(name, ("", ""))
        default_user = IMAGE_USER if platform.default_uid is None else platform.default_uid
        user = r.get(section, "runAsUser", where_p, (int, str), default_user, _check_user)
        uid = None if user == IMAGE_USER else user
        group = r.get(section, "runAsGroup", where_p, int, None, _check_id)
        if uid is None and group is not None:
            r.errors.append(f'{where_p}.runAsGroup: needs a runAsUser other than "{IMAGE_USER}"')
        platforms[name] = PlatformConfig(
            build_image=r.get(section, "buildImage", where_p, str, build_image, _check_image),
            run_image=r.get(section, "runImage", where_p, str, run_image, _check_image),
            build_env=r.string_map(section, "buildEnv", where_p, _check_env_name),
            run_as_user=uid,
            run_as_group=None if uid is None else (group or platform.default_uid or uid),
            non_root=uid is not None or platform.image_user_non_root,
        )

    tolerations = r.get(pod, "tolerations", "pod", list, [])
    for index, toleration in enumerate(tolerations):
        if not isinstance(toleration, dict):
            r.errors.append(
                f"pod.tolerations[{index}]: expected a mapping, got {kind_of(toleration)}"
            )
    secrets = r.get(pod, "imagePullSecrets", "pod", list, [])
    for index, secret in enumerate(secrets):
        if not isinstance(secret, str) or _check_dns_name(secret):
            r.errors.append(f"pod.imagePullSecrets[{index}]: expected a Secret name")
    policy = r.get(
        pod,
        "imagePullPolicy",
        "pod",
        str,
        "IfNotPresent",
        lambda v: (
            None
            if v in ("Always", "IfNotPresent", "Never")
            else "must be Always, IfNotPresent or Never"
        ),
    )
    kubeconfig = r.get(top, "kubeconfig", "", str, None)
    config = Config(
        path=path,
        namespace=r.get(top, "namespace", "", str, None, _check_dns_label),
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        kubernetes_server=r.get(
            top,
            "kubernetesServer",
            "",
            str,
            "https://kubernetes.default.svc",
            lambda v: None if v.startswith("https://") else "must be an https:// URL",
        ),
        service_account_dir=Path(
            r.get(
                top, "serviceAccountDir", "", str, "/var/run/secrets/kubernetes.io/serviceaccount"
            )
        ),
        fabric_version=fabric_version,
        peer_id=r.get(peer, "id", "peer", str, None),
        peer_pod_name=r.get(peer, "podName", "peer", str, None, _check_dns_name),
        owner_references=r.get(peer, "ownerReferences", "peer", bool, True),
        transfer_mode=r.get(
            transfer,
            "mode",
            "transfer",
            str,
            "volume",
            lambda v: None if v in TRANSFER_MODES else "must be volume or api",
        ),
        transfer_claim=r.get(
            transfer, "claimName", "transfer", str, "k8scc-transfer", _check_dns_name
        ),
        transfer_max_bytes=buildcache.parse_size(
            r.get(transfer, "maxSize", "transfer", str, "2Gi", _check_size)
        )
        or 0,
        transfer_mount_path=Path(
            r.get(
                transfer,
                "mountPath",
                "transfer",
                str,
                "/var/lib/k8scc/transfer",
                lambda v: None if v.startswith("/") else "must be an absolute path",
            )
        ),
        build_cache=_build_cache(r, cache),
        platforms=platforms,
        build_env=r.string_map(top, "buildEnv", "", _check_env_name),
        builder_resources=r.resources(builder, "builder"),
        chaincode_resources=r.resources(chaincode, "chaincode"),
        chaincode_logging={
            key: value
            for key, value in (
                (
                    "CORE_CHAINCODE_LOGGING_LEVEL",
                    r.get(logging, "level", "chaincode.logging", str, ""),
                ),
                (
                    "CORE_CHAINCODE_LOGGING_SHIM",
                    r.get(logging, "shim", "chaincode.logging", str, ""),
                ),
                (
                    "CORE_CHAINCODE_LOGGING_FORMAT",
                    r.get(logging, "format", "chaincode.logging", str, ""),
                ),
            )
            if value
        },
        build_timeout=r.duration(timeouts, "build", "timeouts", 280.0),
        start_timeout=r.duration(timeouts, "start", "timeouts", 180.0),
        stuck_timeout=r.duration(timeouts, "stuck", "timeouts", 20.0),
        leftover_age=r.duration(timeouts, "leftovers", "timeouts", math.inf),
        termination_grace=r.get(
            chaincode,
            "terminationGracePeriodSeconds",
            "chaincode",
            int,
            2,
            _check_grace,
        ),
        image_pull_policy=policy,
        node_selector=r.string_map(
            pod, "nodeSelector", "pod", _check_label_key, _check_label_value
        ),
        tolerations=[t for t in tolerations if isinstance(t, dict)],
        affinity=r.get(pod, "affinity", "pod", dict, {}),
        image_pull_secrets=[s for s in secrets if isinstance(s, str)],
        service_account_name=r.get(pod, "serviceAccountName", "pod", str, None, _check_dns_name),
        labels=r.string_map(pod, "labels", "pod", _check_label_key, _check_label_value),
        annotations=r.string_map(pod, "annotations", "pod", _check_label_key),
        rules=_rules(r, top),
        debug=r.get(top, "debug", "", bool, False),
    )
    if config.leftover_age == math.inf:
        config = records.replace(config, leftover_age=max(900.0, 2 * config.build_timeout))
    elif config.leftover_age <= config.build_timeout:
        # A live build's pod would be collected as another build's leftover.
        r.errors.append("timeouts.leftovers: must be longer than timeouts.build")
    for rule in config.rules:
        if rule.builder and (rule.builder.timeout or 0) >= config.leftover_age:
            r.errors.append(
                f"chaincodes[{rule.index}].builder.timeout: must be shorter than"
                f" timeouts.leftovers ({config.leftover_age:.0f} s)"
            )
    if r.errors:
        raise K8sccError(f"{where}: " + "; ".join(r.errors))
    return config


def load(path: Path, recorded_in: Path | None = None) -> Config:
    """The configuration in file `path`, read from the record in `recorded_in` when that holds
    the file's current text."""
    text = configfile.read(path)
    document = configrecord.recorded(recorded_in, text) if recorded_in else None
    return validate(_yaml_document(text, path) if document is None else document, path)


def record(path: Path, directory: Path) -> None:
    """Keeps the document of file `path` in `directory` for `load` to find."""
    text = configfile.read(path)
    configrecord.record(directory, text, _yaml_document(text, path))
