"""The chaincode platforms k8scc builds and launches, as data plus the commands Fabric's own
Docker builder runs for them (same build scripts, launch arguments and directories), so
chaincode runs unchanged."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection

from k8scc.errors import K8sccError

INPUT_DIR = "/chaincode/input"
OUTPUT_DIR = "/chaincode/output"

_STATIC = "-ldflags \"-linkmode external -extldflags '-static'\""


def golang_build_script(path: str, fabric_version: str) -> str:
    """Fabric's Go build: vendored or module builds at the source root or at the package path,
    else GOPATH mode; statically linked, as Fabric links by default."""
    module = "" if fabric_version.startswith("3") else "GO111MODULE=on "
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
            f"  {module}go build -v -mod=readonly {ldflags}{out} {package}",
            f"elif [ -f {at_path}/go.mod ] && [ -d {at_path}/vendor ]; then",
            f"  cd {at_path}",
            f"  {module}go build -v -mod=vendor {ldflags}{out} .",
            f"elif [ -f {at_path}/go.mod ]; then",
            f"  cd {at_path}",
            f"  {module}go build -v -mod=readonly {ldflags}{out} .",
            "else",
            f"  GO111MODULE=off GOPATH={INPUT_DIR}:$GOPATH go build -v {ldflags}{out} {package}",
            "fi",
            "echo Done!",
        ]
    )


def node_build_script(path: str, fabric_version: str) -> str:
    return (
        "set -e\n"
        "if [ -x /chaincode/build.sh ]; then\n"
        "  /chaincode/build.sh\n"
        "else\n"
        f"  cp -R {INPUT_DIR}/src/. {OUTPUT_DIR} && cd {OUTPUT_DIR} && npm install --production\n"
        "fi"
    )


def java_build_script(path: str, fabric_version: str) -> str:
    return "./build.sh"


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


class Platform:
    __slots__ = (
        "build_script",
        "build_workdir",
        "default_build_env",
        "default_uid",
        "launch",
        "name",
        "output_dir",
    )

    def __init__(
        self,
        name: str,
        build_script: Callable[[str, str], str],
        launch: Callable[[str], list[str]],
        output_dir: str,
        build_workdir: str | None,
        default_uid: int | None,
        default_build_env: tuple[tuple[str, str], ...] = (),
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


PLATFORMS: dict[str, Platform] = {
    "golang": Platform(
        name="golang",
        build_script=golang_build_script,
        launch=golang_launch,
        output_dir="/usr/local/bin",
        build_workdir=None,
        default_uid=500,
        default_build_env=(("GOPROXY", "https://proxy.golang.org"),),
    ),
    "node": Platform(
        name="node",
        build_script=node_build_script,
        launch=node_launch,
        output_dir="/usr/local/src",
        build_workdir=None,
        default_uid=1000,
    ),
    "java": Platform(
        name="java",
        build_script=java_build_script,
        launch=java_launch,
        output_dir="/root/chaincode-java/chaincode",
        build_workdir="/root/chaincode-java",
        default_uid=None,
    ),
}


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
