"""YAML documents read the safe way, through libyaml when PyYAML has it: a kubeconfig's
embedded certificates take the pure-Python scanner milliseconds on every `run` start."""

from __future__ import annotations

from typing import Any

import yaml

LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


def load(text: str) -> Any:
    """The one document in `text`, as yaml.safe_load reads it."""
    return yaml.load(text, Loader=LOADER)  # noqa: S506 -- a safe loader
