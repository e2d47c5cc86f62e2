"""What `build` records beside its output for `run`: the platform and images it built for."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from k8scc.errors import K8sccError

FILE = "k8scc-build.json"


@dataclass(frozen=True)
class BuildInfo:
    platform: str
    build_image: str
    run_image: str
    label: str
    k8scc_version: str

    def write(self, build_output: Path) -> None:
        (build_output / FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")


def read(build_output: Path) -> BuildInfo:
    path = build_output / FILE
    try:
        data = json.loads(path.read_text())
        return BuildInfo(**{key: str(data[key]) for key in BuildInfo.__dataclass_fields__})
    except FileNotFoundError:
        raise K8sccError(f"{path} not found: this package was not built by k8scc") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise K8sccError(f"{path} is unreadable: {error}") from None
