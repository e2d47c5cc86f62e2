"""Build caches on the real node: a chaincode's next build reuses what its last one downloaded
and compiled, one chaincode cannot reach another's cache, scopes are pruned, and builds also
work from a mirror or with no network at all.

The claim is a host directory here (as a hostPath volume), so a test can look at what the
builders left in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client

from k8scc import buildcache
from testbed import tools
from testbed.cluster import Testbed
from testbed.mirror import Mirror
from tests.cluster.test_concurrency import build_all
from tests.cluster.test_steps import wait_clean
from tests.support.builder import (
    Builder,
    apply_rbac,
    make_builder,
    package_source,
    small_node_package,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

CLAIM = "build-cache"
DOWNLOADING = "go: downloading"
# A Go release newer than the test bed's ccenv has (1.26): the go command gets it as a module.
NEWER_GO = "1.27.3"


@pytest.fixture
def cache_dir(testbed: Testbed, namespace: str, tmp_path: Path) -> Path:
    """The directory behind the claim CLAIM of the test's namespace, writable by every builder
    user (a hostPath volume takes no fsGroup)."""
    directory = tmp_path / "cache"
    directory.mkdir()
    directory.chmod(0o777)
    testbed.control_plane.create_local_volume(namespace, CLAIM, directory)
    return directory


def cached_builder(
    testbed: Testbed,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    cache: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Builder:
    settings = {"buildCache": {"claimName": CLAIM, **(cache or {})}, **(extra or {})}
    return plain_builder(testbed, namespace, volume_dir, tmp_path, settings)


def plain_builder(
    testbed: Testbed, namespace: str, volume_dir: Path, tmp_path: Path, settings: dict[str, Any]
) -> Builder:
    apply_rbac(testbed.control_plane, namespace)
    workdir = tmp_path / "k8scc"
    workdir.mkdir()
    return make_builder(testbed, namespace, volume_dir, workdir, settings)


def build(builder: Builder, package: tuple[Path, Path], workdir: Path) -> tuple[str, Path]:
    """Builds the package; its stderr and BUILD_OUTPUT_DIR. Fails the test if the build does."""
    source, metadata = package
    output = workdir / "bld"
    output.mkdir(parents=True)
    built = builder.run("build", source, metadata, output)
    assert built.returncode == 0, built.stderr
    return built.stderr, output


def go_package(workdir: Path, label: str, go_mod: str, main: str) -> tuple[Path, Path]:
    source = workdir / "src-dir"
    module = source / "src"
    module.mkdir(parents=True)
    (module / "go.mod").write_text(go_mod)
    (module / "main.go").write_text(main)
    metadata = workdir / "metadata"
    metadata.mkdir()
    (metadata / "metadata.json").write_text(
        json.dumps({"path": "example.test/cc", "type": "golang", "label": label})
    )
    return source, metadata


UUID_MAIN = """package main

import (
	"fmt"

	"github.com/google/uuid"
)

func main() { fmt.Println(uuid.NewSHA1(uuid.NameSpaceDNS, []byte("k8scc"))) }
"""


def uuid_package(workdir: Path, label: str) -> tuple[Path, Path]:
    """A Go chaincode with one dependency and a go.sum made by the host's go command."""
    package = go_package(
        workdir,
        label,
        "module example.test/cc\n\ngo 1.24\n\nrequire github.com/google/uuid v1.6.0\n",
        UUID_MAIN,
    )
    host_go(package[0] / "src", "mod", "tidy")
    return package


def host_go(directory: Path, *args: str) -> None:
    subprocess.run(
        [str(tools.go()), *args], cwd=directory, check=True, capture_output=True, timeout=300
    )


def scope_of(cache_dir: Path, platform_dir: str, label: str) -> Path:
    return cache_dir / platform_dir / buildcache.scope_dir(label, "chaincode")


# -- reuse ----------------------------------------------------------------------------------


def test_a_second_version_of_the_go_sample_downloads_nothing(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    builder = cached_builder(testbed, namespace, volume_dir, tmp_path)
    first, _ = build(
        builder, package_source("golang", tmp_path / "v1", "asset_1.0"), tmp_path / "v1"
    )
    assert DOWNLOADING in first
    second, output = build(
        builder, package_source("golang", tmp_path / "v2", "asset_2.0"), tmp_path / "v2"
    )
    assert DOWNLOADING not in second, second
    assert (output / "output" / "chaincode").is_file()
    scope = scope_of(cache_dir, "golang-500", "asset_1.0")
    assert (scope / "mod" / "github.com" / "hyperledger").is_dir()
    assert any((scope / "build").iterdir())
    assert wait_clean(admin, namespace, volume_dir) == []


def test_builds_of_one_chaincode_at_once_share_its_cache(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    builder = cached_builder(testbed, namespace, volume_dir, tmp_path)
    packages = [uuid_package(tmp_path / f"p{i}", f"ids_1.{i}") for i in range(3)]
    for output in build_all(builder, packages[:2], tmp_path):
        assert (output / "output" / "chaincode").is_file()
    third, _ = build(builder, packages[2], tmp_path / "third")
    assert DOWNLOADING not in third, third
    assert wait_clean(admin, namespace, volume_dir) == []


def test_a_go_mod_asking_for_a_newer_go_gets_it_through_the_module_proxy_once(
    testbed: Testbed, namespace: str, volume_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Fabric's ccenv (a golang image) says GOTOOLCHAIN=local; k8scc's builders say auto, so
    the go command takes the Go release go.mod names from the module proxy, as a module that
    the cache then keeps."""
    builder = cached_builder(testbed, namespace, volume_dir, tmp_path)
    go_mod = f"module example.test/cc\n\ngo {NEWER_GO}\n"
    main = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("newer") }\n'
    first, output = build(
        builder, go_package(tmp_path / "v1", "newer_1", go_mod, main), tmp_path / "v1"
    )
    assert f"{DOWNLOADING} go{NEWER_GO}" in first, first
    version = subprocess.run(
        [str(tools.go()), "version", str(output / "output" / "chaincode")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"go{NEWER_GO}" in version
    second, _ = build(
        builder, go_package(tmp_path / "v2", "newer_2", go_mod, main), tmp_path / "v2"
    )
    assert DOWNLOADING not in second, second


# -- isolation ------------------------------------------------------------------------------

# npm runs a package's own install scripts: chaincode code, during its build.
POISON = 'echo poisoned > "$npm_config_cache/POISON"'
SEES = 'if [ -e "$npm_config_cache/POISON" ]; then echo yes > saw.txt; else echo no > saw.txt; fi'


def node_build(builder: Builder, workdir: Path, label: str, script: str) -> Path:
    package = small_node_package(workdir, label, scripts={"postinstall": script})
    _, output = build(builder, package, workdir)
    return output / "output"


def test_one_chaincode_cannot_poison_anothers_cache(
    testbed: Testbed, namespace: str, volume_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    builder = cached_builder(testbed, namespace, volume_dir, tmp_path)
    escape = (
        f"{POISON}; ls -a /chaincode/cache/.. > above.txt;"
        f" ls {buildcache.CLAIM_DIR} > claim.txt 2>&1 || true"
    )
    evil = node_build(builder, tmp_path / "evil1", "evil_1.0", escape)
    assert "cache" in (evil / "above.txt").read_text().split()
    assert "No such file" in (evil / "claim.txt").read_text()
    victim = node_build(builder, tmp_path / "victim", "victim_1.0", SEES)
    assert (victim / "saw.txt").read_text() == "no\n"
    # The cache is real: the next version of the same chaincode finds what the last one left.
    again = node_build(builder, tmp_path / "evil2", "evil_2.0", SEES)
    assert (again / "saw.txt").read_text() == "yes\n"
    assert (scope_of(cache_dir, "node-1000", "evil_1.0") / "npm" / "POISON").is_file()
    assert not (scope_of(cache_dir, "node-1000", "victim_1.0") / "npm" / "POISON").exists()


def test_a_platform_wide_scope_is_shared_by_all_chaincode(
    testbed: Testbed, namespace: str, volume_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    builder = cached_builder(testbed, namespace, volume_dir, tmp_path, {"scope": "platform"})
    node_build(builder, tmp_path / "one", "one_1.0", POISON)
    other = node_build(builder, tmp_path / "other", "other_1.0", SEES)
    assert (other / "saw.txt").read_text() == "yes\n"
    assert (cache_dir / "node-1000" / "shared" / "npm" / "POISON").is_file()


# -- bounds and failures ----------------------------------------------------------------------


def test_scopes_over_the_bound_are_pruned_least_recently_used_first(
    testbed: Testbed, namespace: str, volume_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    builder = cached_builder(testbed, namespace, volume_dir, tmp_path, {"maxSize": "64Ki"})
    for label in ("old_1", "recent_1"):
        node_build(
            builder, tmp_path / label, label, "head -c 40000 /dev/zero > $npm_config_cache/f"
        )
    old, recent = (scope_of(cache_dir, "node-1000", label) for label in ("old_1", "recent_1"))
    assert old.is_dir() and recent.is_dir()
    # Both are in use (marked within timeouts.build); the old one is made a day older.
    day_ago = time.time() - 86400
    os.utime(old, (day_ago, day_ago))
    node_build(builder, tmp_path / "new", "new_1", "true")
    assert not old.exists()
    assert recent.is_dir()
    assert scope_of(cache_dir, "node-1000", "new_1").is_dir()


def test_a_cache_the_builder_cannot_write_fails_the_build_in_one_line(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    cache_dir.chmod(0o755)
    builder = cached_builder(testbed, namespace, volume_dir, tmp_path)
    source, metadata = small_node_package(tmp_path / "pkg", "asset_1.0")
    output = tmp_path / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode != 0
    [error] = [line for line in built.stderr.splitlines() if "error: " in line]
    assert "init container cache: Error, exit code 1" in error, built.stderr
    assert "node-1000" in error and "ermission denied" in error
    assert list(output.iterdir()) == []
    assert wait_clean(admin, namespace, volume_dir) == []


# -- mirrors and no network -----------------------------------------------------------------


@pytest.fixture
def mirror(testbed: Testbed) -> Iterator[Mirror]:
    served = Mirror(testbed.host_address)
    served.start()
    yield served
    served.stop()


def test_go_and_npm_mirrors_reach_the_build(
    testbed: Testbed, namespace: str, volume_dir: Path, tmp_path: Path, mirror: Mirror
) -> None:
    """No HTTPS_PROXY: the pods' only way to a registry is the mirror the settings name."""
    env = {
        "GOPROXY": mirror.url("go"),
        "npm_config_registry": f"{mirror.url('npm')}/",
    }
    # No cache: what the test bed's shared one holds would spare the mirror some requests.
    settings = {"buildEnv": env, "buildCache": None}
    builder = plain_builder(testbed, namespace, volume_dir, tmp_path, settings)
    build(builder, uuid_package(tmp_path / "go", "ids_1"), tmp_path / "go")
    assert "/go/github.com/google/uuid/@v/v1.6.0.zip" in mirror.requests
    package = small_node_package(tmp_path / "node", "numbers_1")
    manifest = json.loads((package[0] / "src" / "package.json").read_text())
    manifest["dependencies"] = {"is-number": "7.0.0"}
    (package[0] / "src" / "package.json").write_text(json.dumps(manifest))
    _, output = build(builder, package, tmp_path / "node")
    assert (output / "output" / "node_modules" / "is-number" / "package.json").is_file()
    assert "/npm/is-number/-/is-number-7.0.0.tgz" in mirror.requests


# Not in fabric-javaenv's offline repository: only a registry can give it.
COMMONS_LANG = ("org.apache.commons", "commons-lang3", "3.17.0")


@pytest.mark.podsecurity("baseline")  # Java runs as its image's user
def test_a_maven_mirror_reaches_the_java_build(
    testbed: Testbed, namespace: str, volume_dir: Path, tmp_path: Path, mirror: Mirror
) -> None:
    """The Java sample with a dependency the image does not hold: without the mirror it cannot
    be built (Maven has no route off the machine here), with MAVEN_MIRROR_URL it comes through
    the mirror and into the chaincode's jar."""
    group, artifact, version = COMMONS_LANG
    source, metadata = package_source("java", tmp_path, "lang_1.0")
    pom = source / "src" / "pom.xml"
    dependency = (
        f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version></dependency>"
    )
    pom.write_text(pom.read_text().replace("<dependencies>", f"<dependencies>{dependency}", 1))
    unmirrored = plain_builder(
        testbed, namespace, volume_dir, tmp_path, {"buildEnv": {}, "buildCache": None}
    )
    refused = tmp_path / "refused"
    refused.mkdir()
    failed = unmirrored.run("build", source, metadata, refused)
    assert failed.returncode != 0
    assert artifact in failed.stderr
    assert list(refused.iterdir()) == []
    settings = {"buildEnv": {"MAVEN_MIRROR_URL": mirror.url("maven")}, "buildCache": None}
    (tmp_path / "mirrored").mkdir()
    mirrored = make_builder(testbed, namespace, volume_dir, tmp_path / "mirrored", settings)
    _, output = build(mirrored, (source, metadata), tmp_path / "with-mirror")
    path = f"/maven/{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.jar"
    assert path in mirror.requests
    with zipfile.ZipFile(output / "output" / "chaincode.jar") as jar:
        assert "org/apache/commons/lang3/StringUtils.class" in jar.namelist()


def test_a_vendored_go_package_builds_with_no_network(
    testbed: Testbed, namespace: str, volume_dir: Path, tmp_path: Path
) -> None:
    """The Go sample with its modules vendored, built with no proxy and module fetches off: a
    builder pod here has no route off the machine but the egress proxy it is not given."""
    source, metadata = package_source("golang", tmp_path, "asset_1.0")
    host_go(source / "src", "mod", "vendor")
    assert (source / "src" / "vendor" / "modules.txt").is_file()
    offline = {"buildEnv": {"GOPROXY": "off", "GOSUMDB": "off"}, "buildCache": None}
    builder = plain_builder(testbed, namespace, volume_dir, tmp_path, offline)
    log, output = build(builder, (source, metadata), tmp_path)
    assert DOWNLOADING not in log
    assert (output / "output" / "chaincode").is_file()
    unvendored = tmp_path / "unvendored"
    shutil.copytree(source, unvendored / "src-dir")
    shutil.rmtree(unvendored / "src-dir" / "src" / "vendor")
    shutil.copytree(metadata, unvendored / "metadata")
    refused = unvendored / "bld"
    refused.mkdir()
    failed = builder.run("build", unvendored / "src-dir", unvendored / "metadata", refused)
    assert failed.returncode != 0
    assert "GOPROXY=off" in failed.stderr
