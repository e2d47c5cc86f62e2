"""detect: claims golang, node and java packages when the configuration names images for the
platform. It runs for every install, so it reads two small files and imports no client."""

from __future__ import annotations

from pathlib import Path

from k8scc import config as configuration
from k8scc.errors import K8sccError
from k8scc.log import StepLog
from k8scc.metadata import read_metadata
from k8scc.platforms import PLATFORMS, lookup


def execute(argv: list[str], log: StepLog, bin_dir: Path | None) -> int:
    metadata = read_metadata(Path(argv[1]))
    platform = lookup(metadata.type)
    if platform is None:
        raise K8sccError(f"type {metadata.type!r} is not one k8scc builds ({', '.join(PLATFORMS)})")
    config = configuration.load(configuration.locate(bin_dir))
    if platform.name not in config.platforms:
        raise K8sccError(f"platform {platform.name} is disabled in {config.path}")
    return 0
