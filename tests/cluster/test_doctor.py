"""`k8scc doctor` against the test bed, run as the peer would run it: a subprocess acting as the
ServiceAccount bound to deploy/chaincode/rbac.yaml's Role. Every check it reports is made to fail
once, for real, and the exit status and table are read as an operator sees them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.cluster import Testbed
from testbed.controlplane import free_port, kubeconfig
from tests.support.builder import Builder, apply_rbac, make_builder, peer_env, rbac_rules

# Java runs as its image's user, which `baseline` admits: namespaces are set up as documented
# for all three platforms (test_fabric_images covers what `restricted` says to Java).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300), pytest.mark.podsecurity("baseline")]

CHECKS = [
    "config",
    "api",
    "permissions",
    "admission",
    "build cache",
    "transfer",
    "images",
    "chaincode address",
]
PERMISSIONS = [
    (verb, resource)
    for rule in rbac_rules()
    for resource in rule["resources"]
    for verb in rule["verbs"]
]


class Report:
    def __init__(self, process: subprocess.CompletedProcess[str]) -> None:
        self.returncode = process.returncode
        self.stdout = process.stdout
        self.stderr = process.stderr
        header, *lines = process.stdout.splitlines()
        assert header.split() == ["CHECK", "RESULT", "DETAIL"], process.stdout
        self.rows: dict[str, tuple[str, str]] = {}
        for line in lines:
            name, status, detail = _split_row(line)
            self.rows[name] = (status, detail)
        assert list(self.rows) == CHECKS, process.stdout

    def status(self, check: str) -> str:
        return self.rows[check][0]

    def detail(self, check: str) -> str:
        return self.rows[check][1]

    def failed(self) -> list[str]:
        return [name for name, (status, _) in self.rows.items() if status == "FAIL"]


def _split_row(line: str) -> tuple[str, str, str]:
    for status in (" PASS ", " FAIL "):
        name, found, detail = line.partition(status)
        if found:
            return name.strip(), status.strip(), detail.strip()
    if line.rstrip().endswith((" PASS", " FAIL")):
        return line[:-5].strip(), line[-4:], ""
    raise AssertionError(f"not a table row: {line!r}")


def doctor(*args: str | Path, env: dict[str, str] | None = None) -> Report:
    process = subprocess.run(
        [sys.executable, "-m", "k8scc", "doctor", *map(str, args)],
        env={**peer_env(), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in process.stderr + process.stdout, process.stderr
    return Report(process)


def config_of(builder: Builder) -> dict[str, Any]:
    loaded = yaml.safe_load((builder.directory / "k8scc.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def with_config(builder: Builder, tmp_path: Path, **changes: Any) -> Path:
    """The builder's configuration with top-level fields replaced, in a file of its own."""
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump({**config_of(builder), **changes}))
    return path


def test_everything_passes_for_the_builder_set_up_as_documented(
    builder: Builder, namespace: str
) -> None:
    report = doctor("--builder-dir", builder.directory)
    assert report.returncode == 0, report.stdout
    assert report.failed() == []
    assert f"system:serviceaccount:{namespace}:k8scc" in report.detail("api")
    volume_mode = [p for p in PERMISSIONS if p[1] != "pods/exec"]
    assert f"all {len(volume_mode)} granted" in report.detail("permissions")
    assert "7 pods and the TLS Secret admitted" in report.detail("admission")
    assert str(builder.transfer) in report.detail("transfer")


def test_everything_passes_in_transfer_mode_api_with_no_volume(
    builder: Builder, tmp_path: Path
) -> None:
    """The stream permissions are checked too; the volume is not looked for."""
    missing = tmp_path / "no-volume"
    api = with_config(builder, tmp_path, transfer={"mode": "api", "mountPath": str(missing)})
    report = doctor("--config", api)
    assert report.returncode == 0, report.stdout
    assert f"all {len(PERMISSIONS)} granted" in report.detail("permissions")
    assert "7 pods and the TLS Secret admitted" in report.detail("admission")
    assert report.detail("transfer").startswith("mode api: no volume")


def test_the_configuration_is_also_found_through_k8scc_cfgfile(builder: Builder) -> None:
    report = doctor(env={"K8SCC_CFGFILE": str(builder.directory / "k8scc.yaml")})
    assert report.returncode == 0, report.stdout


def test_an_invalid_configuration_fails_with_its_error_and_runs_nothing_needing_it(
    builder: Builder, tmp_path: Path
) -> None:
    bad = with_config(builder, tmp_path, timeouts={"build": "5 minutes"})
    report = doctor("--config", bad)
    assert report.returncode == 1
    assert report.status("config") == "FAIL"
    assert "timeouts.build: invalid duration '5 minutes'" in report.detail("config")
    for check in ("api", "permissions", "admission", "build cache", "transfer", "images"):
        assert report.detail(check) == "not run: needs a valid configuration"


def test_a_missing_configuration_names_where_it_was_looked_for(tmp_path: Path) -> None:
    report = doctor("--builder-dir", tmp_path)
    assert report.returncode == 1
    assert f"configuration file {tmp_path / 'k8scc.yaml'} not found" in report.detail("config")


def test_an_unreachable_api_server_is_a_failed_row(
    testbed: Testbed, builder: Builder, tmp_path: Path
) -> None:
    port = free_port()
    closed = tmp_path / "closed.kubeconfig"
    user = {"token": "never-sent"}
    closed.write_text(kubeconfig(f"https://127.0.0.1:{port}", testbed.control_plane.ca_file, user))
    report = doctor("--config", with_config(builder, tmp_path, kubeconfig=str(closed)))
    assert report.returncode == 1
    assert report.failed() == ["api", "permissions", "admission", "build cache"]
    assert f"asking https://127.0.0.1:{port} who we are" in report.detail("api")
    assert "onnect" in report.detail("api")
    assert report.detail("permissions") == "not run: needs the api check to pass"


@pytest.mark.parametrize(
    ("verb", "resource"), PERMISSIONS, ids=[f"{verb} {resource}" for verb, resource in PERMISSIONS]
)
def test_each_missing_permission_is_named(
    testbed: Testbed, namespace: str, volume_dir: Path, tmp_path: Path, verb: str, resource: str
) -> None:
    rules = []
    for rule in rbac_rules():
        verbs = [v for v in rule["verbs"] if not (resource in rule["resources"] and v == verb)]
        if verbs:
            rules.append({**rule, "verbs": verbs})
    apply_rbac(testbed.control_plane, namespace, rules)
    # Streams are what transfer mode api needs; the volume mode never asks for them.
    settings = {"transfer": {"mode": "api"}} if resource == "pods/exec" else {}
    builder = make_builder(testbed, namespace, volume_dir, tmp_path, settings)
    report = doctor("--builder-dir", builder.directory)
    assert report.returncode == 1
    assert report.status("permissions") == "FAIL"
    assert report.detail("permissions").endswith(f"missing: {verb} {resource}")
    # Creating is what admission is asked about, so only a missing create fails it too.
    admitted = verb == "create" and resource in ("pods", "secrets")
    expected = ["permissions", "admission"] if admitted else ["permissions"]
    assert report.failed() == expected


def test_pods_the_namespace_podsecurity_rejects_fail_with_the_servers_message(
    builder: Builder, namespace: str, tmp_path: Path
) -> None:
    # An unconfined AppArmor profile is something every PodSecurity level but privileged
    # forbids; pod.annotations is the one place the configuration can ask for it.
    annotations = {"container.apparmor.security.beta.kubernetes.io/build": "unconfined"}
    report = doctor("--config", with_config(builder, tmp_path, pod={"annotations": annotations}))
    assert report.returncode == 1
    assert report.failed() == ["admission"]
    detail = report.detail("admission")
    assert detail.startswith(f"namespace {namespace} refuses platforms golang, java, k8s, node:"), (
        detail
    )
    assert "golang builder pod: rejected:" in detail
    assert 'violates PodSecurity "baseline:latest"' in detail
    assert "AppArmor" in detail
    # PodSecurity judges pods only.
    assert "TLS Secret" not in detail


def test_the_build_cache_claim_is_inspected_where_the_role_lets_doctor_read_it(
    testbed: Testbed, namespace: str, volume_dir: Path, tmp_path: Path
) -> None:
    claims = {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"]}
    readable = [*rbac_rules(), claims]
    apply_rbac(testbed.control_plane, namespace, readable)
    builder = make_builder(testbed, namespace, volume_dir, tmp_path)
    report = doctor("--builder-dir", builder.directory)
    assert report.status("build cache") == "PASS", report.stdout
    assert report.detail("build cache") == (
        "claim k8scc-build-cache Bound, ReadWriteMany, 10Gi;"
        " scope chaincode, at most 4096 MiB per platform"
    )
    missing = with_config(builder, tmp_path, buildCache={"claimName": "nowhere"})
    report = doctor("--config", missing)
    assert report.failed() == ["build cache"]
    assert report.detail("build cache") == f"claim nowhere not found in namespace {namespace}"


def test_without_get_on_claims_the_build_cache_is_reported_not_inspected(
    builder: Builder,
) -> None:
    report = doctor("--builder-dir", builder.directory)
    assert report.status("build cache") == "PASS"
    assert report.detail("build cache") == (
        "claim k8scc-build-cache (scope chaincode, at most 4096 MiB per platform)"
        " not inspected: no get on persistentvolumeclaims"
    )


def test_a_missing_transfer_mount_fails(builder: Builder, tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    config = with_config(
        builder, tmp_path, transfer={"claimName": "transfer", "mountPath": str(missing)}
    )
    report = doctor("--config", config)
    assert report.returncode == 1
    assert report.failed() == ["transfer"]
    assert report.detail("transfer") == f"transfer.mountPath {missing} does not exist"


def test_a_transfer_mount_that_is_a_file_fails(builder: Builder, tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("")
    config = with_config(
        builder, tmp_path, transfer={"claimName": "transfer", "mountPath": str(file)}
    )
    report = doctor("--config", config)
    assert report.failed() == ["transfer"]
    assert report.detail("transfer") == f"transfer.mountPath {file} is not a directory"


def test_a_read_only_transfer_mount_fails(builder: Builder) -> None:
    """The volume mounted read-only, as a peer pod's volumeMount with readOnly: true does: doctor
    runs in a mount namespace of its own where the transfer directory is a read-only bind mount."""
    mount = builder.transfer
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    process = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(mount),
            sys.executable,
            "-m",
            "k8scc",
            "doctor",
            "--builder-dir",
            str(builder.directory),
        ],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = Report(process)
    assert report.returncode == 1, process.stderr
    assert report.failed() == ["transfer"]
    assert report.detail("transfer") == f"cannot write in {mount}: Read-only file system"


def test_a_platform_without_an_image_is_refused_by_the_configuration(
    builder: Builder, tmp_path: Path
) -> None:
    config = with_config(builder, tmp_path, platforms={"node": {"runImage": ""}})
    report = doctor("--config", config)
    assert report.returncode == 1
    assert "platforms.node.runImage: invalid image reference ''" in report.detail("config")
    assert report.detail("images") == "not run: needs a valid configuration"


def test_no_platform_enabled_fails_the_images_check(builder: Builder, tmp_path: Path) -> None:
    config = with_config(
        builder, tmp_path, platforms={"golang": None, "node": None, "java": None, "k8s": None}
    )
    report = doctor("--config", config)
    assert report.returncode == 1
    assert report.failed() == ["images"]
    assert "every platform is disabled" in report.detail("images")


@pytest.mark.parametrize(
    "variables",
    [
        {"CORE_PEER_CHAINCODEADDRESS": "127.0.0.1:7052"},
        {"CORE_PEER_CHAINCODELISTENADDRESS": "0.0.0.0:7052"},
        {"CORE_PEER_ADDRESS": "localhost:7051"},
    ],
    ids="-".join,
)
def test_a_loopback_chaincode_address_in_a_pod_fails(
    builder: Builder, variables: dict[str, str]
) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", **variables}
    report = doctor("--builder-dir", builder.directory, env=env)
    assert report.returncode == 1
    assert report.failed() == ["chaincode address"]
    [(name, value)] = variables.items()
    assert report.detail("chaincode address").startswith(f"{name}={value} is loopback")


def test_a_loopback_chaincode_address_outside_a_pod_passes_with_a_note(builder: Builder) -> None:
    report = doctor(
        "--builder-dir", builder.directory, env={"CORE_PEER_CHAINCODEADDRESS": "127.0.0.1:7052"}
    )
    assert report.returncode == 0, report.stdout
    assert "not in a pod" in report.detail("chaincode address")
