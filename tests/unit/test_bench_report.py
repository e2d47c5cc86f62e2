"""The benchmark's markdown summary: one row per figure present, targets judged on the worst
run, missed targets named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import plots
from bench.report import markdown, rows, table

pytestmark = pytest.mark.unit


def s(median: float, low: float, high: float, runs: int = 3) -> dict[str, Any]:
    return {"median": median, "min": low, "max": high, "runs": runs}


def results(**parts: Any) -> dict[str, Any]:
    base = {
        "started": "2026-11-24T17:00:00+00:00",
        "runs": 3,
        "build_runs": 3,
        "quick": False,
        "cpus": 2,
        "load_before": 1.5,
        "duration_s": 600.0,
        "notes": ["a note"],
    }
    return base | parts


def launch(requests: dict[str, Any]) -> dict[str, Any]:
    return {
        "registered_s": s(1.5, 1.2, 2.0),
        "running_s": s(1.0, 0.9, 1.1),
        "rss_peak_mb": s(23.0, 22.0, 24.0),
        "rss_steady_mb": s(22.0, 21.0, 26.0),
        "requests": requests,
        "breakdown": {"create pods": 1, "watch pods": 1},
    }


def test_targets_hold_for_the_worst_run() -> None:
    found = {
        r.figure: r
        for r in rows(
            results(
                detect_ms=s(50, 40, 70),
                build={
                    "golang": {
                        "k8scc_s": s(11, 10, 12),
                        "host_s": s(10, 10, 11),
                        "ratio": s(1.05, 1.0, 1.09),
                        "requests": s(4, 4, 4),
                    }
                },
            )
        )
    }
    assert found["detect"].met is False  # median 50 ms, but one run took 70
    assert found["build golang: k8scc/host"].met is True
    assert found["build golang: k8scc"].met is None  # no target


def test_api_load_must_not_grow_with_unrelated_pods() -> None:
    grows = rows(
        results(
            launch={"unrelated_pods": 200, "empty": launch(s(7, 7, 7)), "busy": launch(s(8, 7, 9))}
        )
    )
    [growth] = [r for r in grows if "growth" in r.figure]
    assert growth.met is False
    assert growth.summary["max"] == 2
    steady = rows(
        results(
            launch={"unrelated_pods": 200, "empty": launch(s(7, 7, 7)), "busy": launch(s(7, 7, 7))}
        )
    )
    assert [r.met for r in steady if "growth" in r.figure] == [True]
    labels = [r.figure for r in steady]
    assert "API requests per launch (200 unrelated pods)" in labels
    assert "run steady RSS (empty namespace)" in labels


def test_concurrency_target_is_every_launch_registered() -> None:
    part = {
        "50": {
            "registered": s(50, 49, 50),
            "all_registered_s": s(30, 25, 40),
            "rss_total_mb": s(1500, 1400, 1600),
        }
    }
    [registered] = [r for r in rows(results(concurrency=part)) if r.figure.endswith(": registered")]
    assert registered.met is False
    assert registered.target == "all 50"


def test_table_rows_and_summary_lines() -> None:
    document = results(detect_ms=s(50, 40, 70))
    text = table(rows(document))
    assert text.splitlines()[2] == "| detect | 50 ms | 40 | 70 | 3 | ≤ 60 ms | **no** |"
    page = markdown(document, ["x-launch.png"])
    assert page.startswith("# k8scc benchmark 2026-11-24T17:00:00+00:00\n")
    assert "Targets missed: detect." in page
    assert "- a note" in page
    assert "![x-launch.png](x-launch.png)" in page


def test_detect_with_a_platforms_section_is_a_figure_without_target() -> None:
    text = table(rows(results(detect_ms=s(50, 40, 55), detect_platforms_ms=s(110, 90, 130))))
    assert text.splitlines()[2:] == [
        "| detect | 50 ms | 40 | 55 | 3 | ≤ 60 ms | yes |",
        "| detect (config with a platforms section) | 110 ms | 90 | 130 | 3 |  |  |",
    ]


def test_build_overhead_in_seconds_is_listed_after_the_ratio() -> None:
    build = {
        "k8scc_s": s(8.5, 8, 9),
        "host_s": s(8, 7.5, 8.5),
        "ratio": s(1.06, 1.03, 1.08),
        "overhead_s": s(0.5, 0.4, 0.7),
        "requests": s(4, 4, 4),
    }
    text = table(rows(results(build={"node": build})))
    assert text.splitlines()[4:6] == [
        "| build node: k8scc/host | 1.06 x | 1.03 | 1.08 | 3 | ≤ 1.10 | yes |",
        "| build node: k8scc - host | 0.5 s | 0.4 | 0.7 | 3 |  |  |",
    ]


def test_breakdowns_are_listed_per_measurement() -> None:
    page = markdown(results(launch={"unrelated_pods": 20, "empty": launch(s(2, 2, 2))}), plots=[])
    assert "- launch (empty namespace): create pods: 1, watch pods: 1" in page
    assert "Targets missed: run steady RSS (empty namespace)." in page


def test_the_warm_go_rebuild_is_judged_on_its_slowest_run() -> None:
    def cache(speedup: dict[str, Any]) -> dict[str, Any]:
        return {
            "cold_s": s(40.0, 35.0, 50.0),
            "warm_s": s(6.0, 5.0, 8.0),
            "speedup": speedup,
            "together_s": s(45.0, 40.0, 50.0),
        }

    found = {
        row.figure: row
        for row in rows(
            results(cache={"golang": cache(s(6.5, 4.8, 7.0)), "node": cache(s(2, 2, 2))})
        )
    }
    go = found["cached build golang: cold/warm"]
    assert (go.target, go.met) == ("≥ 5", False)
    assert found["cached build node: cold/warm"].met is None
    assert found["cached build golang: second version (warm)"].summary["median"] == 6.0
    assert "cached build golang: two chaincodes at once" in found


@pytest.mark.parametrize(("later", "met"), [(s(0.4, 0.3, 0.9), True), (s(0.8, 0.7, 0.9), False)])
def test_a_launch_through_the_api_may_be_later_by_the_stream_time_only(
    later: dict[str, Any], met: bool
) -> None:
    api = launch(s(9, 9, 9)) | {"stream_s": s(0.5, 0.4, 0.6)}
    found = {
        r.figure: r
        for r in rows(
            results(
                launch={
                    "unrelated_pods": 20,
                    "api_bytes": 25 << 20,
                    "empty": launch(s(9, 9, 9)),
                    "api": api,
                    "api_later_s": later,
                }
            )
        )
    }
    stream = found["launch, files through the API: stream into the pod (25 MB)"]
    assert stream.summary["median"] == 0.5
    assert found["launch → registered: api mode - volume mode"].met is met
    assert "launch → registered (files through the API, empty namespace)" in found


def test_plots_show_the_build_cache_and_the_start_of_a_launch(tmp_path: Path) -> None:
    figures = {
        **launch(s(7, 7, 7)),
        "accepted_ms": s(45, 40, 52),
        "first_request_ms": s(41, 37, 49),
    }
    cache = {"cold_s": s(28, 27, 29), "warm_s": s(4, 3.9, 4.1), "speedup": s(7, 6.9, 7.1)}
    written = plots.write(
        results(
            launch={"unrelated_pods": 20, "empty": figures},
            cache={"golang": {**cache, "together_s": s(48, 47, 49)}},
        ),
        tmp_path,
        "x",
    )
    assert {"x-cache.png", "x-cache-speedup.png", "x-start.png"} <= set(written)
    assert all((tmp_path / name).stat().st_size > 0 for name in written)
