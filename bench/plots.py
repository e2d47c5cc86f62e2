"""PNG bar charts of a results document: medians as bars, min-max as error bars, targets as
dashed lines."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a build machine

import matplotlib.pyplot as plt

from bench.report import (
    ACCEPTED_TARGET_MS,
    PLATFORMS,
    REQUESTS_TARGET,
    RSS_TARGET_MB,
    WARM_SPEEDUP_TARGET,
    launch_labels,
)


def _bars(
    path: Path,
    title: str,
    unit: str,
    groups: list[str],
    series: dict[str, list[dict[str, Any] | None]],
    target: float | None = None,
) -> None:
    figure, axes = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(series))
    for offset, (label, summaries) in enumerate(series.items()):
        xs, medians, low, high = [], [], [], []
        for index, s in enumerate(summaries):
            if s is None:
                continue
            xs.append(index + (offset - (len(series) - 1) / 2) * width)
            medians.append(s["median"])
            low.append(s["median"] - s["min"])
            high.append(s["max"] - s["median"])
        axes.bar(xs, medians, width, yerr=[low, high], capsize=4, label=label)
    if target is not None:
        axes.axhline(target, color="red", linestyle="--", linewidth=1, label="target")
    # Wrapped: the launch sides' names are longer than a bar is wide.
    axes.set_xticks(range(len(groups)), [textwrap.fill(group, 22) for group in groups])
    axes.set_ylabel(unit)
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(results: dict[str, Any], directory: Path, stem: str) -> list[str]:
    """The plots the results have data for; returns their file names."""
    written: list[str] = []

    def out(name: str) -> Path:
        written.append(f"{stem}-{name}.png")
        return directory / written[-1]

    builds = results.get("build", {})
    platforms = [p for p in PLATFORMS if p in builds]
    if platforms:
        _bars(
            out("build"),
            "Build wall time (cold caches)",
            "s",
            platforms,
            {
                "k8scc (volume)": [builds[p]["k8scc_s"] for p in platforms],
                "k8scc (api)": [builds[p].get("api_s") for p in platforms],
                "host": [builds[p]["host_s"] for p in platforms],
            },
        )
    caches = results.get("cache", {})
    cached = [p for p in PLATFORMS if p in caches]
    if cached:
        _bars(
            out("cache"),
            "Builds on a build cache",
            "s",
            cached,
            {
                "cold (empty cache)": [caches[p]["cold_s"] for p in cached],
                "second version (warm)": [caches[p]["warm_s"] for p in cached],
                "two chaincodes at once": [caches[p]["together_s"] for p in cached],
            },
        )
        _bars(
            out("cache-speedup"),
            "Cold build time / warm build time (the target is for Go)",
            "x",
            cached,
            {"cold/warm": [caches[p]["speedup"] for p in cached]},
            target=WARM_SPEEDUP_TARGET,
        )
    launch = results.get("launch", {})
    labels = launch_labels(launch)
    keys = list(labels)
    if keys:
        groups = list(labels.values())
        _bars(
            out("launch"),
            "Launch latency from run starting",
            "s",
            groups,
            {
                "pod Running": [launch[k]["running_s"] for k in keys],
                "registered at the peer": [launch[k]["registered_s"] for k in keys],
            },
        )
        _bars(
            out("start"),
            "From run starting to the API server",
            "ms",
            groups,
            {
                "first request received": [launch[k].get("first_request_ms") for k in keys],
                "pod accepted": [launch[k].get("accepted_ms") for k in keys],
            },
            target=ACCEPTED_TARGET_MS,
        )
        _bars(
            out("memory"),
            "RSS of a run process",
            "MB",
            groups,
            {
                "peak (VmHWM)": [launch[k]["rss_peak_mb"] for k in keys],
                "steady (VmRSS)": [launch[k]["rss_steady_mb"] for k in keys],
            },
            target=RSS_TARGET_MB,
        )
        api_build = results.get("api_build", {})
        _bars(
            out("api"),
            "API requests by k8scc's ServiceAccount",
            "requests",
            groups,
            {
                "per launch": [launch[k]["requests"] for k in keys],
                "per build": [api_build.get(k, {}).get("requests") for k in keys],
            },
            target=REQUESTS_TARGET,
        )
    concurrency = results.get("concurrency", {})
    if concurrency:
        counts = sorted(concurrency, key=int)
        _bars(
            out("concurrency"),
            "Concurrent launches: time until all registered",
            "s",
            [f"{c} chaincodes" for c in counts],
            {"all registered": [concurrency[c]["all_registered_s"] for c in counts]},
        )
    transfer = results.get("transfer")
    if transfer:
        _bars(
            out("transfer"),
            f"Moving a {transfer['bytes'] // (1024 * 1024)} MB tree ({transfer['files']} files)",
            "MB/s",
            ["throughput"],
            {"VolumeTransfer": [transfer["volume_mb_s"]], "cp -a": [transfer["cp_mb_s"]]},
        )
    return written
