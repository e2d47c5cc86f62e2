"""Typed construction of lightkube resources from plain manifests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

R = TypeVar("R")


def load(kind: type[R], data: Mapping[str, Any]) -> R:
    """`kind.from_dict`, typed as `kind` (lightkube types it as its dict mixin)."""
    return cast(R, kind.from_dict(dict(data)))  # type: ignore[attr-defined]
