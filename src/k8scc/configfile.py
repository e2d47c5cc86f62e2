"""Where k8scc's configuration file is, and its text. Apart from config.py, which validates
it, so that detect can read the file without importing the YAML parser.

The file is found through K8SCC_CFGFILE, else as k8scc.yaml next to the builder's bin/ (the peer
prunes the environment of builder processes, so a file beside the builder always works).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from k8scc.errors import K8sccError

CONFIG_ENV = "K8SCC_CFGFILE"
CONFIG_NAME = "k8scc.yaml"


def locate(bin_dir: Path | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """K8SCC_CFGFILE if set, else k8scc.yaml beside the builder's bin/ directory."""
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    if bin_dir is None:
        raise K8sccError(f"no configuration: set {CONFIG_ENV} or put {CONFIG_NAME} beside bin/")
    return bin_dir.parent / CONFIG_NAME


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise K8sccError(
            f"configuration file {path} not found"
            f" (set {CONFIG_ENV} or put {CONFIG_NAME} beside bin/)"
        ) from None
    except OSError as error:
        raise K8sccError(f"cannot read configuration file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise K8sccError(
            f"configuration file {path} is not UTF-8 text (byte {error.start})"
        ) from None
