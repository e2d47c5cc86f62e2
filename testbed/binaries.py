"""Go-built binaries of the test bed, built from the Go module proxy on first use.

Each component is a small wrapper Go module committed under testbed/go/<component>; its binaries
are cached under ~/.cache/k8scc/bin/<component>-<version>-<hash of go.mod, go.sum and any .go
files>, so a changed pin (or, for a program of our own, changed source) rebuilds and an unchanged
one is reused across work trees and CI runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import tools

GO_DIR = Path(__file__).resolve().parent / "go"
KUBE_VERSION = "1.36.3"
ETCD_VERSION = "3.6.16"
CONTAINERD_VERSION = "2.3.7"
# Our own pod sandbox program (testbed/go/pause/main.go); bump when main.go changes.
PAUSE_VERSION = "1.0"
# Fabric's module path has no /v2 or /v3 suffix, so its tags are reached through v1.4.0-rc1
# pseudo-versions pinned in testbed/go/fabric-<x.y>/go.mod; the module proxy here serves only some
# of them, which is why these are not the newest patch releases.
FABRIC_31_VERSION = "3.1.1"
FABRIC_25_VERSION = "2.5.9"


def cache_root() -> Path:
    return Path(os.environ.get("K8SCC_CACHE", Path.home() / ".cache" / "k8scc"))


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    # Go package path -> binary name in the cache directory.
    binaries: dict[str, str]
    ldflags: str
    # Build tags passed to `go build -tags`, none by default.
    tags: tuple[str, ...] = ()

    @property
    def module_dir(self) -> Path:
        return GO_DIR / self.name

    def cache_dir(self) -> Path:
        # go.mod and go.sum bytes first, as before .go files counted, so wrapper modules (which
        # hold no .go file) keep their keys; a module without dependencies has no go.sum.
        digest = hashlib.sha256()
        for file in ("go.mod", "go.sum"):
            if (path := self.module_dir / file).is_file():
                digest.update(path.read_bytes())
        for path in sorted(self.module_dir.rglob("*.go")):
            digest.update(path.relative_to(self.module_dir).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
        return cache_root() / "bin" / f"{self.name}-v{self.version}-{digest.hexdigest()[:12]}"


_VERSION_PKG = "k8s.io/component-base/version"
_MAJOR, _MINOR, _ = KUBE_VERSION.split(".")

KUBE = Component(
    name="kube",
    version=KUBE_VERSION,
    binaries={
        "k8s.io/kubernetes/cmd/kube-apiserver": "kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager": "kube-controller-manager",
    },
    # Without these /version reports v0.0.0-master and version-checking clients complain.
    ldflags=(
        f"-s -w -X {_VERSION_PKG}.gitVersion=v{KUBE_VERSION} -X {_VERSION_PKG}.gitMajor={_MAJOR}"
        f" -X {_VERSION_PKG}.gitMinor={_MINOR} -X {_VERSION_PKG}.gitTreeState=clean"
    ),
)
# kubectl (with its built-in kustomize) has its own wrapper module: its dependencies are not in
# kube's go.sum, and adding them there would change kube's cache key and rebuild the API server.
KUBECTL = Component(
    name="kubectl",
    version=KUBE_VERSION,
    binaries={"k8s.io/kubernetes/cmd/kubectl": "kubectl"},
    ldflags=KUBE.ldflags,
)
ETCD = Component(
    name="etcd",
    version=ETCD_VERSION,
    binaries={"go.etcd.io/etcd/server/v3": "etcd"},
    ldflags="-s -w",
)
# The node binaries have their own wrapper module too: the kubelet needs requirements missing from
# kube's go.sum (k8s.io/cri-streaming, otelrestful, github.com/Microsoft/hnslib).
NODE = Component(
    name="node",
    version=KUBE_VERSION,
    binaries={
        "k8s.io/kubernetes/cmd/kubelet": "kubelet",
        "k8s.io/kubernetes/cmd/kube-scheduler": "kube-scheduler",
    },
    ldflags=KUBE.ldflags,
)
_CONTAINERD_MODULE = "github.com/containerd/containerd/v2"
CONTAINERD = Component(
    name="containerd",
    version=CONTAINERD_VERSION,
    binaries={
        f"{_CONTAINERD_MODULE}/cmd/containerd": "containerd",
        f"{_CONTAINERD_MODULE}/cmd/ctr": "ctr",
        # containerd starts a shim per pod sandbox; without it no pod runs.
        f"{_CONTAINERD_MODULE}/cmd/containerd-shim-runc-v2": "containerd-shim-runc-v2",
    },
    # Without the Version flag `containerd --version` says 2.3.7+unknown.
    ldflags=f"-s -w -X {_CONTAINERD_MODULE}/version.Version={CONTAINERD_VERSION}",
    # Leaves out snapshotters the test bed does not use: btrfs needs cgo (the builds are
    # CGO_ENABLED=0), devmapper and zfs need host tools and storage set up for them.
    tags=("no_btrfs", "no_devmapper", "no_zfs"),
)
COREDNS_VERSION = "1.14.7"
# The node's cluster DNS, so that Services (headless ones included) resolve in pods.
COREDNS = Component(
    name="coredns",
    version=COREDNS_VERSION,
    binaries={"github.com/coredns/coredns": "coredns"},
    ldflags="-s -w",
)
PAUSE = Component(
    name="pause",
    version=PAUSE_VERSION,
    binaries={"k8scc.test/testbed/pause": "pause"},
    ldflags="-s -w",
)

_FABRIC_CMDS = ("peer", "orderer", "configtxgen", "cryptogen", "osnadmin")


def _fabric(minor: str, version: str) -> Component:
    return Component(
        name=f"fabric-{minor}",
        version=version,
        binaries={f"github.com/hyperledger/fabric/cmd/{cmd}": cmd for cmd in _FABRIC_CMDS},
        # Without the Version flag `peer version` says "latest" and tests cannot tell 2.5 from 3.1.
        ldflags=f"-s -w -X github.com/hyperledger/fabric/common/metadata.Version={version}",
    )


FABRIC_31 = _fabric("3.1", FABRIC_31_VERSION)
FABRIC_25 = _fabric("2.5", FABRIC_25_VERSION)
# Keyed by the minor version that testbed.fabric.FabricNetwork takes.
FABRIC = {"3.1": FABRIC_31, "2.5": FABRIC_25}


def _progress(message: str) -> None:
    print(f"testbed: {message}", file=sys.stderr, flush=True)


def _build(component: Component, target: Path) -> None:
    """Builds into a temporary sibling of `target`, then renames it into place atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    started = time.monotonic()
    _progress(
        f"building {component.name} v{component.version} from the Go module proxy into {target}"
        " (a few minutes on a cold cache)"
    )
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            _progress(f"still building {component.name} ({time.monotonic() - started:.0f} s)")

    threading.Thread(target=heartbeat, daemon=True).start()
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    try:
        # One `go build` per binary: Go would name etcd's main package "server" (.../server/v3).
        tags = ["-tags", ",".join(component.tags)] if component.tags else []
        for package, binary in component.binaries.items():
            result = subprocess.run(
                [
                    str(tools.go()),
                    "build",
                    "-trimpath",
                    *tags,
                    "-ldflags",
                    component.ldflags,
                    "-o",
                    str(staging / binary),
                    package,
                ],
                cwd=component.module_dir,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                shutil.rmtree(staging, ignore_errors=True)
                raise RuntimeError(f"go build of {package} failed:\n{result.stderr[-4000:]}")
    finally:
        done.set()
    staging.rename(target)
    _progress(f"built {component.name} in {time.monotonic() - started:.0f} s")


def ensure(component: Component) -> Path:
    """Returns the directory holding the component's binaries, building them if needed."""
    target = component.cache_dir()
    if target.is_dir():
        return target
    lock_path = cache_root() / "bin" / f".{component.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        # Another process (a parallel test run, `make testbed`) may be building the same thing.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            _build(component, target)
    return target


def main() -> None:
    # No arguments: the Kubernetes test bed; otherwise the components named, e.g. fabric-3.1.
    components = (ETCD, KUBE, KUBECTL, NODE, CONTAINERD, COREDNS, PAUSE, *FABRIC.values())
    known = {c.name: c for c in components}
    names = sys.argv[1:] or [ETCD.name, KUBE.name]
    unknown = [name for name in names if name not in known]
    if unknown:
        sys.exit(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for name in names:
        print(ensure(known[name]))


if __name__ == "__main__":
    main()
