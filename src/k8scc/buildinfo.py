"""What `build` records beside its output for `run`: the platform and images it built for, and
the architecture of the node it built on."""

from __future__ import annotations

import json
from pathlib import Path

from k8scc.errors import K8sccError
from k8scc.record import as_dict, record

FILE = "k8scc-build.json"
# `uname -m` -> the kubernetes.io/arch label (Go's GOARCH) of nodes of that architecture.
ARCHITECTURES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@record
class BuildInfo:
    platform: str
    build_image: str
    run_image: str
    label: str
    k8scc_version: str
    # kubernetes.io/arch of the builder's node; empty when unknown (or built by k8scc < 0.3).
    architecture: str = ""

    def write(self, build_output: Path) -> None:
        (build_output / FILE).write_text(json.dumps(as_dict(self), indent=2) + "\n")


def read(build_output: Path) -> BuildInfo:
    path = build_output / FILE
    try:
        data = json.loads(path.read_text())
        required = ("platform", "build_image", "run_image", "label", "k8scc_version")
        return BuildInfo(
            **{key: str(data[key]) for key in required},
            architecture=str(data.get("architecture", "")),
        )
    except FileNotFoundError:
        raise K8sccError(f"{path} not found: this package was not built by k8scc") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise K8sccError(f"{path} is unreadable: {error}") from None
