"""`k8scc doctor`: run where the peer runs, it checks what the steps will need — a valid
configuration, the API server and who we are there, every permission of the Role, pods and
the TLS Secret admitted by the namespace, the build cache's claim, the transfer volume, images,
and a chaincode address that pods can reach — and prints one row per check, so a broken setup
is found before the first install fails."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from k8scc import config as configuration
from k8scc import configfile, identity, names, render, rules
from k8scc.config import Config
from k8scc.errors import K8sccError
from k8scc.kube import Kube
from k8scc.metadata import ChaincodeJson
from k8scc.platforms import FROM_SOURCE, PLATFORMS
from k8scc.record import record

# Everything k8scc asks of Kubernetes, as (verb, resource[/subresource]) in the core API group;
# STREAM_PERMISSIONS only in transfer mode api. deploy/chaincode/rbac.yaml's Role grants exactly
# both (a unit test compares them).
PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("create", "pods"),
    ("get", "pods"),
    ("list", "pods"),
    ("watch", "pods"),
    ("delete", "pods"),
    ("get", "pods/log"),
    ("create", "secrets"),
    ("delete", "secrets"),
)
# An exec stream is a WebSocket upgrade, which the API server authorizes as both verbs.
STREAM_PERMISSIONS = (("create", "pods/exec"), ("get", "pods/exec"))
ADDRESS_VARIABLES = (
    "CORE_PEER_CHAINCODEADDRESS",
    "CORE_PEER_CHAINCODELISTENADDRESS",
    "CORE_PEER_ADDRESS",
)
TIMEOUT_SECONDS = 5.0
_PLACEHOLDER_PEM = "-----BEGIN CERTIFICATE-----\nazhzY2MgZG9jdG9y\n-----END CERTIFICATE-----\n"
_PLACEHOLDER_KEY = "-----BEGIN PRIVATE KEY-----\nazhzY2MgZG9jdG9y\n-----END PRIVATE KEY-----\n"
# What a k8s package would name; a dry run pulls nothing.
_PLACEHOLDER_IMAGE = f"k8scc-doctor.invalid/chaincode@sha256:{'0' * 64}"


@record
class Result:
    check: str
    passed: bool
    detail: str


def table(results: Iterable[Result]) -> str:
    """Aligned columns: check, PASS/FAIL, detail on one line."""
    rows = [("CHECK", "RESULT", "DETAIL")] + [
        (r.check, "PASS" if r.passed else "FAIL", " ".join(r.detail.split())) for r in results
    ]
    width = max(len(row[0]) for row in rows)
    return "".join(f"{c.ljust(width)}  {s.ljust(6)}  {d}".rstrip() + "\n" for c, s, d in rows)


def role_permissions(rules: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """What a Role's rules grant in the core API group, as (verb, resource) pairs."""
    return {
        (verb, resource)
        for rule in rules
        if "" in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def is_loopback(address: str) -> bool:
    """True when `host[:port]` names this machine (localhost, 127.0.0.0/8, ::1) or no machine
    at all (0.0.0.0, ::): chaincode in another pod cannot reach the peer there."""
    host = address.strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def check_config(path: Path | None, builder_dir: Path | None) -> tuple[Result, Config | None]:
    try:
        located = path or configfile.locate(builder_dir / "bin" if builder_dir else None)
    except K8sccError:
        detail = f"no configuration: pass --config or --builder-dir, or set {configfile.CONFIG_ENV}"
        return Result("config", False, detail), None
    try:
        config = configuration.load(located)
    except K8sccError as error:
        return Result("config", False, str(error)), None
    return Result("config", True, f"{located} is valid"), config


def check_api(kube: Kube) -> Result:
    user = kube.whoami()
    return Result(
        "api", True, f"{kube.server()} answers; we are {user} in namespace {kube.namespace}"
    )


def needed_permissions(config: Config) -> tuple[tuple[str, str], ...]:
    return PERMISSIONS + (STREAM_PERMISSIONS if config.transfer_mode == "api" else ())


def check_permissions(kube: Kube, config: Config) -> Result:
    needed = needed_permissions(config)
    missing = [
        f"{verb} {resource}" for verb, resource in needed if not kube.allowed(verb, resource)
    ]
    if missing:
        return Result(
            "permissions", False, f"in namespace {kube.namespace}, missing: {', '.join(missing)}"
        )
    return Result("permissions", True, f"all {len(needed)} granted in namespace {kube.namespace}")


def placeholder_objects(
    config: Config, label: str | None = None, package_id: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The builder and chaincode pod of every enabled platform and a TLS Secret, as the steps
    render them, under names of the real shape; described for the report. With a `label` (and
    `package_id`), the pods of that chaincode, its `chaincodes` rules applied."""
    who = identity.unowned(config)
    if package_id is None:
        package_id = f"{label or 'k8scc-doctor_1.0'}:{'0' * 64}"
    chaincode = ChaincodeJson(
        chaincode_id=package_id,
        peer_address="peer.k8scc-doctor.invalid:7052",
        client_cert=_PLACEHOLDER_PEM,
        client_key=_PLACEHOLDER_KEY,
        root_cert=_PLACEHOLDER_PEM,
        mspid="K8sccDoctorMSP",
    )
    run_name = names.chaincode_name(who.peer_id, package_id)
    launch = names.launch_name(run_name, "doctor")
    build_name = names.build_name(who.peer_id, chaincode.label, "doctor")
    objects: list[tuple[str, dict[str, Any]]] = []
    for name in config.platforms:
        platform = PLATFORMS[name]
        if not platform.prebuilt:
            build = rules.effective(config, rules.BUILD, name, chaincode.label).config
            pod = render.builder_pod(
                build, platform, "k8scc.doctor/cc", chaincode.label, build_name, who, build_name
            )
            objects.append((f"{name} builder pod", pod))
        run = rules.effective(config, rules.RUN, name, chaincode.label, package_id)
        run_image = run.run_image or config.platforms[name].run_image or _PLACEHOLDER_IMAGE
        pod = render.chaincode_pod(
            run.config, platform, run_image, chaincode, run_name, who, launch
        )
        objects.append((f"{name} chaincode pod", pod))
    objects.append(("TLS Secret", render.tls_secret(chaincode, launch, who, config)))
    return objects


def check_admission(
    kube: Kube, config: Config, label: str | None = None, package_id: str | None = None
) -> Result:
    """Every pod k8scc would create, created in a dry run: the namespace's admission (its
    PodSecurity level, say) answers for each platform before any install; with a `label`,
    for that chaincode's pods as its rules make them."""
    objects = placeholder_objects(config, label, package_id)
    messages: dict[str, str] = {}
    for what, manifest in objects:
        try:
            kube.dry_run_create(manifest)
        except K8sccError as error:
            messages[what] = str(error)
    if messages:
        refused = sorted({what.split()[0] for what in messages if what != "TLS Secret"})
        first, *others = messages
        also = f"; also rejected: {', '.join(others)}" if others else ""
        # Refused for running as root: the one refusal the configuration chose knowingly.
        as_image = [
            name
            for name in refused
            if config.platforms[name].run_as_user is None
            and any(w.startswith(name) and "runAsNonRoot" in m for w, m in messages.items())
        ]
        why = (
            f" ({', '.join(as_image)}: pods run as the image's own user, root in Fabric's javaenv:"
            " PodSecurity baseline admits that, restricted does not; see docs/security.md)"
            if as_image
            else ""
        )
        subject = f"platforms {', '.join(refused)}" if refused else "the TLS Secret"
        return Result(
            "admission",
            False,
            f"namespace {kube.namespace} refuses {subject}{why}: {first}: {messages[first]}{also}",
        )
    return Result(
        "admission",
        True,
        f"{len(objects) - 1} pods and the TLS Secret admitted in namespace {kube.namespace}"
        f" (dry run{f', label {label}' if label else ''})",
    )


def check_build_cache(kube: Kube, config: Config) -> Result:
    cache = config.build_cache
    if cache is None:
        return Result("build cache", True, "none configured: every build starts empty")
    settings = f"scope {cache.scope}, at most {cache.max_kib // 1024} MiB per platform"
    if not kube.allowed("get", "persistentvolumeclaims"):
        return Result(
            "build cache",
            True,
            f"claim {cache.claim} ({settings}) not inspected: no get on persistentvolumeclaims",
        )
    claim = kube.get_claim(cache.claim)
    if claim is None:
        return Result(
            "build cache", False, f"claim {cache.claim} not found in namespace {kube.namespace}"
        )
    status = claim.get("status") or {}
    phase = status.get("phase", "unknown")
    if phase != "Bound":
        return Result("build cache", False, f"claim {cache.claim} is {phase}, not Bound")
    modes = status.get("accessModes") or claim.get("spec", {}).get("accessModes") or []
    size = (status.get("capacity") or {}).get("storage", "unknown size")
    detail = f"claim {cache.claim} Bound, {', '.join(modes)}, {size}; {settings}"
    if "ReadWriteMany" not in modes:
        detail += "; not ReadWriteMany: builder pods must run on one node"
    return Result("build cache", True, detail)


def check_transfer(config: Config) -> Result:
    if config.transfer_mode == "api":
        # Its one need is pods/exec, which the permissions row checks.
        size = config.transfer_max_bytes
        return Result("transfer", True, f"mode api: no volume, streams of at most {size} bytes")
    mount = config.transfer_mount_path
    if not mount.exists():
        return Result("transfer", False, f"transfer.mountPath {mount} does not exist")
    if not mount.is_dir():
        return Result("transfer", False, f"transfer.mountPath {mount} is not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".k8scc-doctor-", dir=mount)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return Result("transfer", False, f"cannot write in {mount}: {error.strerror}")
    return Result("transfer", True, f"{mount} is writable")


def check_images(config: Config) -> Result:
    if not config.platforms:
        return Result("images", False, "every platform is disabled: k8scc would build nothing")
    # A k8s package names its own image.
    built = {name: s for name, s in config.platforms.items() if name in FROM_SOURCE}
    missing = [
        f"platforms.{name}.{field}"
        for name, settings in built.items()
        for field, image in (("buildImage", settings.build_image), ("runImage", settings.run_image))
        if not image.strip()
    ]
    if missing:
        return Result("images", False, f"no image: {', '.join(missing)}")
    shown = [f"{name}: {s.build_image}, {s.run_image}" for name, s in built.items()]
    if len(built) < len(config.platforms):
        shown.append("k8s: the image each package names")
    return Result("images", True, "; ".join(shown))


def check_chaincode_address(config: Config | None, environ: Mapping[str, str]) -> Result:
    name = "chaincode address"
    variable = next((v for v in ADDRESS_VARIABLES if environ.get(v)), None)
    in_pod = bool(environ.get("KUBERNETES_SERVICE_HOST")) or bool(config and config.peer_pod_name)
    if variable is None:
        return Result(
            name,
            True,
            f"none of {', '.join(ADDRESS_VARIABLES)} set here:"
            " check peer.chaincodeAddress in core.yaml",
        )
    address = environ[variable]
    if not in_pod:
        return Result(
            name,
            True,
            f"{variable}={address}; the peer is not in a pod, so loopback is not checked",
        )
    if is_loopback(address):
        return Result(
            name,
            False,
            f"{variable}={address} is loopback, which chaincode pods cannot reach:"
            " set CORE_PEER_CHAINCODEADDRESS to the peer pod's or its Service's address",
        )
    return Result(name, True, f"{variable}={address}")


def _guarded(check: str, run: Callable[[], Result]) -> Result:
    """A check that fails unexpectedly is a FAIL row, never a traceback."""
    try:
        return run()
    except K8sccError as error:
        return Result(check, False, str(error))
    except Exception as error:
        return Result(check, False, f"internal error: {type(error).__name__}: {error}")


def _not_run(checks: Iterable[str], reason: str) -> list[Result]:
    return [Result(check, False, f"not run: {reason}") for check in checks]


def check_rules(config: Config, label: str, package_id: str | None) -> Result:
    """Which `chaincodes` rules a chaincode's builder and chaincode pods get, and the fields
    those rules set, as k8scc.yaml names them."""
    parts = []
    for step, kind in ((rules.BUILD, "builder"), (rules.RUN, "chaincode")):
        found = rules.matching(config, step, label, package_id)
        fields = dict.fromkeys(name for _, part in found for name in rules.fields_set(part))
        applied = ", ".join(f"chaincodes[{rule.index}]" for rule, _ in found)
        setting = f" ({', '.join(fields) or 'nothing for them'})"
        parts.append(f"{kind} pods: {applied + setting if found else 'no rule'}")
    return Result("rules", True, f"label {label}: " + "; ".join(parts))


def diagnose(
    path: Path | None,
    builder_dir: Path | None,
    environ: Mapping[str, str],
    label: str | None = None,
    package_id: str | None = None,
) -> list[Result]:
    config_result, config = check_config(path, builder_dir)
    results = [config_result]
    if config is None:
        results += _not_run(
            ("api", "permissions", "admission", "build cache", "transfer", "images"),
            "needs a valid configuration",
        )
    else:
        results += _cluster_results(config, label, package_id)
        results.append(_guarded("transfer", lambda: check_transfer(config)))
        results.append(_guarded("images", lambda: check_images(config)))
        if label is not None:
            results.append(check_rules(config, label, package_id))
    results.append(_guarded("chaincode address", lambda: check_chaincode_address(config, environ)))
    return results


def _cluster_results(config: Config, label: str | None, package_id: str | None) -> list[Result]:
    kube: Kube | None = None

    def connect() -> Result:
        nonlocal kube
        kube = Kube.connect(config)
        kube.answer_quickly(TIMEOUT_SECONDS)
        return check_api(kube)

    api = _guarded("api", connect)
    if kube is None or not api.passed:
        return [
            api,
            *_not_run(("permissions", "admission", "build cache"), "needs the api check to pass"),
        ]
    ready = kube
    return [
        api,
        _guarded("permissions", lambda: check_permissions(ready, config)),
        _guarded("admission", lambda: check_admission(ready, config, label, package_id)),
        _guarded("build cache", lambda: check_build_cache(ready, config)),
    ]


def main(
    path: Path | None,
    builder_dir: Path | None,
    environ: Mapping[str, str] = os.environ,
    label: str | None = None,
    package_id: str | None = None,
) -> int:
    """Prints the table; 0 when every check passed, else 1."""
    results = diagnose(path, builder_dir, environ, label, package_id)
    print(table(results), end="")
    return 0 if all(r.passed for r in results) else 1
