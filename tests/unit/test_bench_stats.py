"""The benchmark's figures: median with min and max, paired ratios, alternating order."""

from __future__ import annotations

import pytest

from bench.stats import Summary, interleaved, paired_ratios, summarise

pytestmark = pytest.mark.unit


def test_summary_is_median_min_max_and_count() -> None:
    assert summarise([3.0, 1.0, 2.0]) == Summary(median=2.0, min=1.0, max=3.0, runs=3)
    assert summarise([4.0, 1.0, 2.0, 10.0]) == Summary(median=3.0, min=1.0, max=10.0, runs=4)
    assert summarise([7.5]).to_dict() == {"median": 7.5, "min": 7.5, "max": 7.5, "runs": 1}


def test_nothing_to_summarise_is_an_error() -> None:
    with pytest.raises(ValueError, match="no measurements"):
        summarise([])


def test_ratios_pair_run_i_with_run_i() -> None:
    # Medians alone would give 20/10 = 2; the pairs say every run was 1.5 or 3.
    assert paired_ratios([15.0, 30.0, 60.0], [10.0, 10.0, 40.0]) == [1.5, 3.0, 1.5]
    with pytest.raises(ValueError, match="as many runs"):
        paired_ratios([1.0], [1.0, 2.0])


def test_order_alternates_between_runs() -> None:
    orders = [interleaved(run, "a", "b") for run in range(4)]
    assert orders == [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]
