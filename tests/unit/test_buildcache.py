"""Build caches: scopes that keep one chaincode's cache from another's, the builder pod that
mounts only its own scope, and the init container's script, run for real by /bin/sh on a
directory standing in for the claim."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k8scc import buildcache, render
from k8scc import config as configuration
from k8scc.config import Config
from k8scc.errors import K8sccError
from k8scc.peer import Identity
from k8scc.platforms import CACHE_DIR, FROM_SOURCE, PLATFORMS
from tests.unit.helpers import is_dns_label, restricted_violations

pytestmark = pytest.mark.unit

CACHED = "buildCache: {claimName: build-cache}\n"


@pytest.mark.parametrize(
    ("label", "chaincode"),
    [
        ("basic_1.0", "basic"),
        ("basic_1.1", "basic"),
        ("asset-transfer_2", "asset-transfer"),
        ("mycc_v2.1.0", "mycc"),
        ("mycc_V3", "mycc"),
        ("mycc_1.0-rc1+build.5", "mycc"),
        ("mycc", "mycc"),
        ("my_cc", "my_cc"),
        ("my_cc_1.0", "my_cc"),
        ("basic_1.0_test", "basic_1.0_test"),
        ("_1.0", "_1.0"),
    ],
)
def test_the_same_chaincode_is_the_label_without_its_version(label: str, chaincode: str) -> None:
    assert buildcache.chaincode_of(label) == chaincode


def test_scopes_are_dns_safe_and_tell_apart_labels_a_slug_would_merge() -> None:
    scopes = {
        label: buildcache.scope_dir(label, "chaincode")
        for label in ("My_CC_1.0", "my-cc_1.0", "my.cc_1.0", "MY+CC_2", "___", "x" * 300)
    }
    assert all(is_dns_label(scope) for scope in scopes.values()), scopes
    assert len(set(scopes.values())) == len(scopes)
    assert buildcache.scope_dir("My_CC_1.0", "chaincode") == buildcache.scope_dir(
        "My_CC_2.0", "chaincode"
    )
    assert buildcache.scope_dir("a_1", "platform") == buildcache.scope_dir("b_1", "platform")


def test_each_platform_and_user_has_a_directory_of_its_own() -> None:
    assert buildcache.platform_dir("golang", 500) == "golang-500"
    assert buildcache.platform_dir("java", None) == "java-image"


@pytest.mark.parametrize(
    ("text", "size"),
    [("4Gi", 4 * 1024**3), ("500Mi", 500 * 1024**2), ("1G", 10**9), ("1048576", 1048576)],
)
def test_sizes(text: str, size: int) -> None:
    assert buildcache.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "4 GiB", "1.5Gi", "-1Gi", "500m", "Gi"])
def test_not_sizes(text: str) -> None:
    assert buildcache.parse_size(text) is None


def test_configuration() -> None:
    assert configuration.parse("").build_cache is None
    cache = configuration.parse(CACHED).build_cache
    assert cache == configuration.BuildCache("build-cache", "chaincode", 4 * 1024**2)
    wide = configuration.parse(
        "buildCache: {claimName: c, scope: platform, maxSize: 1500Mi}\n"
    ).build_cache
    assert wide == configuration.BuildCache("c", "platform", 1500 * 1024)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("buildCache: {scope: platform}", "buildCache.claimName: needed to use a build cache"),
        ("buildCache: {claimName: c, scope: peer}", "buildCache.scope: must be chaincode or"),
        ("buildCache: {claimName: c, maxSize: 4GB}", "buildCache.maxSize: invalid size '4GB'"),
        ("buildCache: {claimName: Bad_Name}", "buildCache.claimName: 'Bad_Name' is not a valid"),
        ("buildCache: {claimName: c, size: 1Gi}", "buildCache.size: unknown key"),
    ],
)
def test_configuration_errors(text: str, message: str) -> None:
    with pytest.raises(K8sccError) as raised:
        configuration.parse(text)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def builder(config: Config, platform: str, label: str = "My_CC_1.0") -> dict[str, Any]:
    return render.builder_pod(
        config, PLATFORMS[platform], "example.com/cc", label, "ccbuild-x", Identity("p0"), "t"
    )


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


@pytest.mark.parametrize("platform", sorted(FROM_SOURCE))
def test_without_a_cache_builders_mount_none(platform: str) -> None:
    pod = builder(configuration.parse(""), platform)
    assert "initContainers" not in pod["spec"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["transfer", "scratch"]
    [container] = pod["spec"]["containers"]
    assert not set(env_of(container)) & {"GOMODCACHE", "npm_config_cache", "MAVEN_OPTS"}


@pytest.mark.parametrize("platform", sorted(FROM_SOURCE))
def test_a_builder_mounts_only_its_scope_and_its_init_container_the_platforms(
    platform: str,
) -> None:
    config = configuration.parse(CACHED)
    pod = builder(config, platform)
    spec = pod["spec"]
    uid = config.platforms[platform].run_as_user
    platform_dir = buildcache.platform_dir(platform, uid)
    scope = buildcache.scope_dir("My_CC_1.0", "chaincode")
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": "build-cache"}} in spec[
        "volumes"
    ]
    [container] = spec["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "cache"]
    assert mount == {"name": "cache", "mountPath": CACHE_DIR, "subPath": f"{platform_dir}/{scope}"}
    [init] = spec["initContainers"]
    assert init["image"] == container["image"]
    assert init["volumeMounts"] == [{"name": "cache", "mountPath": buildcache.CLAIM_DIR}]
    assert init["args"][:3] == ["/bin/sh", "-c", buildcache.PREPARE_SCRIPT]
    keep = str(int(config.build_timeout) + render.CACHE_IN_USE_MARGIN)
    assert init["args"][3:] == ["k8scc-cache", platform_dir, scope, str(4 * 1024**2), keep]
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    cache_env = dict(PLATFORMS[platform].cache_env)
    assert cache_env.items() <= env_of(container).items()
    assert any(CACHE_DIR in value for value in cache_env.values())
    if uid is not None:
        assert restricted_violations(pod) == []
        assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_versions_of_a_chaincode_share_a_scope_and_other_chaincode_does_not() -> None:
    config = configuration.parse(CACHED)

    def scope(label: str) -> str:
        [container] = builder(config, "node", label)["spec"]["containers"]
        return str(next(m["subPath"] for m in container["volumeMounts"] if m["name"] == "cache"))

    assert scope("basic_1.0") == scope("basic_2.0")
    assert scope("basic_1.0") != scope("other_1.0")
    shared = configuration.parse("buildCache: {claimName: c, scope: platform}\n")
    [container] = builder(shared, "node", "basic_1.0")["spec"]["containers"]
    assert {"name": "cache", "mountPath": CACHE_DIR, "subPath": "node-1000/shared"} in container[
        "volumeMounts"
    ]


def test_operators_environment_wins_over_the_cache_settings() -> None:
    config = configuration.parse(CACHED + "platforms: {golang: {buildEnv: {GOCACHE: /elsewhere}}}")
    [container] = builder(config, "golang")["spec"]["containers"]
    assert env_of(container)["GOCACHE"] == "/elsewhere"
    assert env_of(container)["GOMODCACHE"] == f"{CACHE_DIR}/mod"


def test_a_cached_go_build_verifies_its_modules() -> None:
    [container] = builder(configuration.parse(CACHED), "golang")["spec"]["containers"]
    assert "go mod verify" in container["args"][4]
    [plain] = builder(configuration.parse(""), "golang")["spec"]["containers"]
    assert "go mod verify" not in plain["args"][4]


# --- the init container's script -----------------------------------------------------------


class Claim:
    """A directory standing in for the claim; runs the script as the init container would, as
    a builder's non-root user (uid 500, as Go builders run) when the tests run as root."""

    UID = 500

    def __init__(self, root: Path) -> None:
        self.root = root
        self.script = buildcache.PREPARE_SCRIPT.replace(buildcache.CLAIM_DIR, str(root))
        self.as_user = (
            ["setpriv", f"--reuid={self.UID}", f"--regid={self.UID}", "--clear-groups"]
            if os.geteuid() == 0
            else []
        )

    def prepare(
        self, scope: str, limit_kib: int = 1 << 20, keep: int = 300, platform: str = "golang-500"
    ) -> subprocess.CompletedProcess[str]:
        args = [platform, scope, str(limit_kib), str(keep)]
        return subprocess.run(
            [*self.as_user, "/bin/sh", "-c", self.script, "k8scc-cache", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def own(self, path: Path) -> None:
        if self.as_user:
            os.chown(path, self.UID, self.UID)

    def fill(self, scope: str, kib: int, age: float, platform: str = "golang-500") -> Path:
        directory = self.root / platform / scope
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").write_bytes(b"x" * kib * 1024)
        for path in (directory.parent, directory, directory / "data"):
            self.own(path)
        when = time.time() - age
        os.utime(directory, (when, when))
        return directory

    def scopes(self, platform: str = "golang-500") -> set[str]:
        return {p.name for p in (self.root / platform).iterdir() if not p.name.startswith(".")}


@pytest.fixture
def claim() -> Iterator[Claim]:
    # Below /tmp rather than tmp_path, whose parents only root may enter.
    root = Path(tempfile.mkdtemp(prefix="k8scc-claim-"))
    root.chmod(0o755)
    made = Claim(root)
    made.own(root)
    yield made
    subprocess.run(["chmod", "-R", "u+w", str(root)], check=True)
    shutil.rmtree(root)


def test_the_first_build_makes_its_scope(claim: Claim) -> None:
    result = claim.prepare("basic-0123456789")
    assert result.returncode == 0, result.stderr
    assert claim.scopes() == {"basic-0123456789"}
    assert time.time() - (claim.root / "golang-500" / "basic-0123456789").stat().st_mtime < 60


def test_a_build_marks_its_scope_used(claim: Claim) -> None:
    scope = claim.fill("basic", 1, age=3600)
    assert claim.prepare("basic").returncode == 0
    assert time.time() - scope.stat().st_mtime < 60
    assert (scope / "data").exists()


def test_over_the_bound_the_least_recently_used_scopes_go(claim: Claim) -> None:
    claim.fill("oldest", 100, age=7200)
    claim.fill("older", 100, age=3600)
    claim.fill("recent", 100, age=1800)
    result = claim.prepare("current", limit_kib=250, keep=600)
    assert result.returncode == 0, result.stderr
    assert claim.scopes() == {"older", "recent", "current"}
    assert "pruned oldest" in result.stdout
    result = claim.prepare("current", limit_kib=150, keep=600)
    assert claim.scopes() == {"recent", "current"}


def test_scopes_in_use_and_the_builds_own_are_kept_over_the_bound(claim: Claim) -> None:
    claim.fill("in-use", 100, age=10)
    claim.fill("current", 100, age=7200)
    result = claim.prepare("current", limit_kib=50, keep=600)
    assert result.returncode == 0, result.stderr
    assert claim.scopes() == {"in-use", "current"}


def test_a_scope_marked_in_the_future_is_not_kept_for_it(claim: Claim) -> None:
    """A build may set its own scope's time; a future one must not make it unprunable."""
    claim.fill("future", 100, age=-86400)
    assert claim.prepare("current", limit_kib=50, keep=600).returncode == 0
    assert claim.scopes() == {"current"}


def test_read_only_trees_are_pruned(claim: Claim) -> None:
    """Go's module cache leaves files and directories read-only."""
    scope = claim.fill("modules", 100, age=7200)
    module = scope / "mod" / "example.com" / "m@v1.0.0"
    module.mkdir(parents=True)
    (module / "go.mod").write_text("module m\n")
    for path in (module / "go.mod", module, module.parent, scope / "mod"):
        claim.own(path)
        path.chmod(0o444 if path.is_file() else 0o555)
    os.utime(scope, (time.time() - 7200,) * 2)
    assert claim.prepare("current", limit_kib=50, keep=600).returncode == 0
    assert claim.scopes() == {"current"}


def test_other_platforms_are_left_alone(claim: Claim) -> None:
    claim.fill("old", 100, age=7200, platform="node-1000")
    assert claim.prepare("current", limit_kib=1, keep=600).returncode == 0
    assert claim.scopes("node-1000") == {"old"}


def test_a_claim_that_cannot_be_written_fails_the_init_container(claim: Claim) -> None:
    if claim.as_user:
        os.chown(claim.root, 0, 0)
    else:
        claim.root.chmod(0o555)
    result = claim.prepare("basic")
    assert result.returncode != 0
    assert "golang-500" in result.stderr


def test_concurrent_builds_prune_one_at_a_time(claim: Claim) -> None:
    for index in range(6):
        claim.fill(f"old{index}", 50, age=7200 + index)
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [
        threading.Thread(target=lambda s=s: results.append(claim.prepare(s, 1, 600)))
        for s in ("a", "b", "c")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert {"a", "b", "c"} <= claim.scopes()
    pruned = [line for r in results for line in r.stdout.splitlines() if "pruned" in line]
    assert len(pruned) == len({line.split()[2] for line in pruned}) == 6


def test_the_script_is_posix_sh() -> None:
    """Fabric's images are Alpine (busybox) and Debian/Ubuntu: no bashisms."""
    checked = subprocess.run(
        ["/bin/sh", "-n", "-c", buildcache.PREPARE_SCRIPT], capture_output=True, check=False
    )
    assert checked.returncode == 0
    assert "[[" not in buildcache.PREPARE_SCRIPT
    assert textwrap.dedent(buildcache.PREPARE_SCRIPT) == buildcache.PREPARE_SCRIPT
