"""detect: claims golang, node and java packages unless the configuration disables the platform.
It runs for every install, so it reads two small files and imports no client, and parses the
configuration only when it may disable a platform."""

from __future__ import annotations

from pathlib import Path

from k8scc import configfile
from k8scc.log import StepLog
from k8scc.metadata import read_metadata
from k8scc.platforms import PLATFORMS, known_platform, require_platform


def enabled_platforms(text: str, path: Path) -> set[str]:
    """The platforms the configuration `text` leaves enabled. Only a `platforms` key disables
    one, and YAML can spell that key without its literal text only through escapes in
    double-quoted scalars; text with neither needs no parsing. build and run validate the
    whole file, so a bad one still fails there."""
    if "platforms" not in text and "\\" not in text:
        return set(PLATFORMS)
    # Imported here: PyYAML and the validation take longer to import than detect may run.
    from k8scc import config  # noqa: PLC0415

    return set(config.parse(text, path).platforms)


def execute(argv: list[str], log: StepLog, bin_dir: Path | None) -> int:
    metadata = read_metadata(Path(argv[1]))
    # An unknown type is declined before the configuration is read: the common case of a
    # package for another builder stays cheap.
    platform = known_platform(metadata.type)
    path = configfile.locate(bin_dir)
    require_platform(platform.name, enabled_platforms(configfile.read(path), path), path)
    return 0
