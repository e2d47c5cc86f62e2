"""Fabric's build command for a platform run directly on the host, as the builder pod runs it.

The host has the images' toolchains (Go, Node.js, a JDK with Maven); bench/hostimages holds
host-native stand-ins for the scripts the nodeenv and javaenv images carry. The pod sees its
image's files, `/chaincode/input` and `/chaincode/output`; here they all live below a root
directory, the script's absolute `/chaincode/...` paths are moved below it, and the stand-in
scripts find it through K8SCC_FSROOT. The environment is the pod's: the host's system PATH with
Go, HOME on an empty directory (so Go's module and build caches, npm's cache and Maven's
repository all start empty, as in the pod's emptyDir), and the configured build env.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from k8scc.config import Config
from k8scc.platforms import Platform
from testbed import tools

OVERLAYS = Path(__file__).resolve().parent / "hostimages"
PATH = tools.host_path()

# `/chaincode/` starting a path, not inside one such as `k8scc.test/samples/chaincode/go`.
_ABSOLUTE = re.compile(r"(?<![\w.-])/chaincode/")


@dataclass(frozen=True)
class HostBuild:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    output: Path


def relocate(script: str, root: Path) -> str:
    return _ABSOLUTE.sub(f"{root}/chaincode/", script)


def build_env(config: Config, platform: Platform, home: Path) -> dict[str, str]:
    """The variables render.builder_pod gives the build container, HOME moved to `home`."""
    settings = config.platforms[platform.name]
    return {
        "HOME": str(home),
        **dict(platform.default_build_env),
        **config.build_env,
        **settings.build_env,
    }


def overlay(image: str) -> Path | None:
    """The stand-in scripts of a Fabric image (`hyperledger/fabric-nodeenv:2.5`), if any."""
    name = image.rsplit("/", 1)[-1].split(":", maxsplit=1)[0].removeprefix("fabric-")
    directory = OVERLAYS / name
    return directory if directory.is_dir() else None


def prepare(
    config: Config,
    platform: Platform,
    metadata_path: str,
    source: Path,
    root: Path,
    overlay: Path | None,
    path: str,
) -> HostBuild:
    """Lays out `root` (image overlay, input copied from `source`, empty output, empty HOME)
    and returns the command to time."""
    if overlay is not None:
        shutil.copytree(overlay, root, symlinks=True)
    shutil.copytree(source, root / "chaincode" / "input", symlinks=True)
    output = root / "chaincode" / "output"
    output.mkdir(parents=True)
    home = root / "home"
    home.mkdir()
    script = relocate(platform.build_script(metadata_path, False), root)
    workdir = root / platform.build_workdir.lstrip("/") if platform.build_workdir else root
    env = {"PATH": path, **build_env(config, platform, home), "K8SCC_FSROOT": str(root)}
    return HostBuild(["/bin/sh", "-c", script], env, workdir, output)
