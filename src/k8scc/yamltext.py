"""YAML documents read the safe way, through libyaml when PyYAML has it: a kubeconfig's
embedded certificates take the pure-Python scanner milliseconds on every `run` start. Only
modules that read YAML import this one: PyYAML is a fifth of `run`'s start-up, and `run`
usually needs none of it (configrecord.py)."""

from __future__ import annotations

from typing import Any

import yaml

from k8scc.errors import K8sccError

LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


def load(text: str, where: str) -> Any:
    """The one document in `text`, as yaml.safe_load reads it; K8sccError naming `where` and
    the line of the problem when it is not valid YAML."""
    try:
        return yaml.load(text, Loader=LOADER)  # noqa: S506 -- a safe loader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        # Errors without a mark (bad characters) span lines of their own.
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise K8sccError(f"{where}: not valid YAML{at}: {problem}") from None
