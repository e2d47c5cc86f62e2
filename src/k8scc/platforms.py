"""The chaincode platforms k8scc builds and launches, as data plus the commands Fabric's own
Docker builder runs for them (same build scripts, launch arguments and directories), so
chaincode runs unchanged; and `k8s`, packages that name a prebuilt image (prebuilt.py), which
run with the image's own entrypoint."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection

from k8scc.errors import K8sccError

INPUT_DIR = "/chaincode/input"
OUTPUT_DIR = "/chaincode/output"
# Where a builder sees its own part of the build cache (buildcache.py), when one is configured.
CACHE_DIR = "/chaincode/cache"
# Every pod's own writable directory (an emptyDir): HOME of uids an image does not know.
SCRATCH_DIR = "/tmp"

_STATIC = "-ldflags \"-linkmode external -extldflags '-static'\""


def golang_build_script(path: str, cached: bool) -> str:
    """Fabric's Go build: vendored or module builds at the source root or at the package path,
    else GOPATH mode; statically linked, as Fabric links by default. Every released Fabric
    (2.5.x, 3.0.0, 3.1.x) keeps the `GO111MODULE=on` prefix. With a build cache (`cached`),
    modules a previous build left are checked against their recorded hashes first."""
    module = "GO111MODULE=on "
    verify = f"  {module}go mod verify\n" if cached else ""
    ldflags = f"{_STATIC} "
    package = shlex.quote(path)
    src = f"{INPUT_DIR}/src"
    at_path = f"{src}/{package}"
    out = f"-o {OUTPUT_DIR}/chaincode"
    return "\n".join(
        [
            "set -e",
            f'if [ -f "{src}/go.mod" ] && [ -d "{src}/vendor" ]; then',
            f"  cd {src}",
            f"  {module}go build -v -mod=vendor {ldflags}{out} {package}",
            f'elif [ -f "{src}/go.mod" ]; then',
            f"  cd {src}",
            f"{verify}  {module}go build -v -mod=readonly {ldflags}{out} {package}",
            f"elif [ -f {at_path}/go.mod ] && [ -d {at_path}/vendor ]; then",
            f"  cd {at_path}",
            f"  {module}go build -v -mod=vendor {ldflags}{out} .",
            f"elif [ -f {at_path}/go.mod ]; then",
            f"  cd {at_path}",
            f"{verify}  {module}go build -v -mod=readonly {ldflags}{out} .",
            "else",
            f"  GO111MODULE=off GOPATH={INPUT_DIR}:$GOPATH go build -v {ldflags}{out} {package}",
            "fi",
            "echo Done!",
        ]
    )


def node_build_script(path: str, cached: bool) -> str:
    return (
        "set -e\n"
        "if [ -x /chaincode/build.sh ]; then\n"
        "  /chaincode/build.sh\n"
        "else\n"
        f"  cp -R {INPUT_DIR}/src/. {OUTPUT_DIR} && cd {OUTPUT_DIR} && npm install --production\n"
        "fi"
    )


# Maven takes mirrors only from a settings file; fabric-javaenv has none to add one to. The URL
# is read from the environment by Maven itself, so no value of the operator's is quoted here.
# The mirror's id is `central`: what the image's offline repository holds was recorded as from
# there, and Maven would otherwise ask the mirror again for every one of those files.
MAVEN_SETTINGS = f"{SCRATCH_DIR}/k8scc-maven-settings.xml"
_MAVEN_MIRROR_SETTINGS = (
    "<settings><mirrors><mirror><id>central</id><mirrorOf>*</mirrorOf>"
    "<url>${env.MAVEN_MIRROR_URL}</url></mirror></mirrors></settings>"
)


def java_build_script(path: str, cached: bool) -> str:
    """Fabric's `./build.sh`; with MAVEN_MIRROR_URL in the builder's environment, every Maven
    repository is mirrored to it, through global settings (the image's user settings, if any,
    still apply). Maven's wrappers take extra options from MAVEN_CONFIG, Maven 3.9's `mvn`
    from MAVEN_ARGS: both are given, whichever launcher the package brings."""
    option = f"-gs {MAVEN_SETTINGS}"
    return "\n".join(
        [
            'if [ -n "${MAVEN_MIRROR_URL:-}" ]; then',
            f"  printf '%s\\n' '{_MAVEN_MIRROR_SETTINGS}' > {MAVEN_SETTINGS}",
            f'  export MAVEN_CONFIG="${{MAVEN_CONFIG:+$MAVEN_CONFIG }}{option}"',
            f'  export MAVEN_ARGS="${{MAVEN_ARGS:+$MAVEN_ARGS }}{option}"',
            "fi",
            "./build.sh",
        ]
    )


def golang_launch(peer_address: str) -> list[str]:
    return ["chaincode", f"-peer.address={peer_address}"]


def node_launch(peer_address: str) -> list[str]:
    address = shlex.quote(peer_address)
    return [
        "/bin/sh",
        "-c",
        "set -e\n"
        "if [ -x /chaincode/start.sh ]; then\n"
        f"  /chaincode/start.sh --peer.address {address}\n"
        "else\n"
        "  cd /usr/local/src\n"
        f"  npm start -- --peer.address {address}\n"
        "fi",
    ]


def java_launch(peer_address: str) -> list[str]:
    return ["/root/chaincode-java/start", "--peerAddress", peer_address]


def prebuilt_build_script(path: str, cached: bool) -> str:
    raise K8sccError("k8s packages name a prebuilt image: there is nothing to build")


def prebuilt_launch(peer_address: str) -> list[str]:
    """No arguments: the image's own ENTRYPOINT and CMD start it; CORE_PEER_ADDRESS names
    the peer."""
    return []


class Platform:
    __slots__ = (
        "build_script",
        "build_workdir",
        "cache_env",
        "default_build_env",
        "default_uid",
        "image_user_non_root",
        "launch",
        "name",
        "output_dir",
        "prebuilt",
    )

    def __init__(
        self,
        name: str,
        build_script: Callable[[str, bool], str],
        launch: Callable[[str], list[str]],
        output_dir: str,
        build_workdir: str | None,
        default_uid: int | None,
        default_build_env: tuple[tuple[str, str], ...] = (),
        cache_env: tuple[tuple[str, str], ...] = (),
        image_user_non_root: bool = False,
        prebuilt: bool = False,
    ) -> None:
        self.name = name
        self.build_script = build_script
        self.launch = launch
        # Where Fabric's Docker builder puts the build output in the runtime image.
        self.output_dir = output_dir
        # The build images' WORKDIR, which Fabric's build commands rely on.
        self.build_workdir = build_workdir
        # Non-root ids matching Fabric's images (ccenv/baseos: user chaincode, nodeenv: user
        # node), or None for the image's own user: fabric-javaenv keeps its scripts, wrappers
        # and offline caches under /root (0700) and works as root only, as Fabric runs it.
        self.default_uid = default_uid
        self.default_build_env = default_build_env
        # Where the platform's tools keep what they download and compile, pointed into
        # CACHE_DIR when a build cache is configured.
        self.cache_env = cache_env
        # Whether "the image's own user" must still be non-root: images of k8scc's choosing
        # may need root (fabric-javaenv), an operator's prebuilt image may not.
        self.image_user_non_root = image_user_non_root
        # A package naming an image built elsewhere: nothing to build, no output to mount.
        self.prebuilt = prebuilt


PLATFORMS: dict[str, Platform] = {
    "golang": Platform(
        name="golang",
        build_script=golang_build_script,
        launch=golang_launch,
        output_dir="/usr/local/bin",
        build_workdir=None,
        default_uid=500,
        # auto: a go.mod asking for a newer Go than the image's gets it through the module
        # proxy (Go's own toolchain switch), cached like any module; golang images say local.
        default_build_env=(("GOPROXY", "https://proxy.golang.org"), ("GOTOOLCHAIN", "auto")),
        cache_env=(("GOMODCACHE", f"{CACHE_DIR}/mod"), ("GOCACHE", f"{CACHE_DIR}/build")),
    ),
    "node": Platform(
        name="node",
        build_script=node_build_script,
        launch=node_launch,
        output_dir="/usr/local/src",
        build_workdir=None,
        default_uid=1000,
        # npm checks every cached tarball against the lock file's integrity on reading it.
        cache_env=(("npm_config_cache", f"{CACHE_DIR}/npm"), ("npm_config_prefer_offline", "true")),
    ),
    "java": Platform(
        name="java",
        build_script=java_build_script,
        launch=java_launch,
        output_dir="/root/chaincode-java/chaincode",
        build_workdir="/root/chaincode-java",
        default_uid=None,
        # Downloads go to the cache; the image's offline repository stays a read-only tail, and
        # file locks keep concurrent builds of one cache apart.
        cache_env=(
            (
                "MAVEN_OPTS",
                f"-Dmaven.repo.local={CACHE_DIR}/maven"
                " -Dmaven.repo.local.tail=/root/.m2/repository"
                " -Daether.syncContext.named.factory=file-lock"
                " -Daether.syncContext.named.nameMapper=file-gav",
            ),
        ),
    ),
    # fabric-builder-k8s's package format: image.json names the image by digest.
    "k8s": Platform(
        name="k8s",
        build_script=prebuilt_build_script,
        launch=prebuilt_launch,
        output_dir="",
        build_workdir=None,
        default_uid=None,
        image_user_non_root=True,
        prebuilt=True,
    ),
}

# The platforms k8scc builds in a builder pod.
FROM_SOURCE = tuple(name for name, platform in PLATFORMS.items() if not platform.prebuilt)


def lookup(chaincode_type: str) -> Platform | None:
    """Fabric compares the metadata type upper-cased, so `GOLANG` and `Golang` are golang too."""
    return PLATFORMS.get(chaincode_type.strip().lower())


def known_platform(chaincode_type: str) -> Platform:
    """The platform of `chaincode_type`; one error line if k8scc builds no such type."""
    platform = lookup(chaincode_type)
    if platform is None:
        known = ", ".join(PLATFORMS)
        raise K8sccError(f"type {chaincode_type!r} is not one k8scc builds ({known})")
    return platform


def require_platform(
    chaincode_type: str, enabled: Collection[str], config_path: object
) -> Platform:
    """The platform of `chaincode_type`, if k8scc builds it and the configuration enables it."""
    platform = known_platform(chaincode_type)
    if platform.name not in enabled:
        raise K8sccError(f"platform {platform.name} is disabled in {config_path}")
    return platform
