"""Summaries of repeated measurements: every figure the suite reports is a median with its
min and max, and comparisons are ratios of paired runs measured side by side."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Summary:
    median: float
    min: float
    max: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no measurements to summarise")
    return Summary(statistics.median(values), min(values), max(values), len(values))


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Run i of A over run i of B: pairs measured next to each other share the machine's load
    of that moment, which a ratio of two medians would not."""
    if len(numerators) != len(denominators):
        raise ValueError("ratios need as many runs on each side")
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def interleaved(run: int, *sides: T) -> tuple[T, ...]:
    """The order of the sides in run `run`: rotated, so no side always goes first (and
    inherits a warmer page cache or a quieter machine)."""
    shift = run % len(sides)
    return sides[shift:] + sides[:shift]
