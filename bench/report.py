"""The markdown summary of a results document (the JSON the suite writes), and which figures
meet their targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PLATFORMS = ("golang", "node", "java")
MB = 1024 * 1024
# Targets the tables check and the plots draw.
ACCEPTED_TARGET_MS = 50
RSS_TARGET_MB = 25
REQUESTS_TARGET = 8
WARM_SPEEDUP_TARGET = 5


@dataclass(frozen=True)
class Row:
    figure: str
    unit: str
    summary: dict[str, Any]  # median, min, max, runs
    target: str = ""
    met: bool | None = None


def _at_most(limit: float) -> Callable[[dict[str, Any]], bool]:
    return lambda summary: bool(summary["max"] <= limit)


def _at_least(limit: float) -> Callable[[dict[str, Any]], bool]:
    return lambda summary: bool(summary["min"] >= limit)


def rows(results: dict[str, Any]) -> list[Row]:
    """One row per figure present in `results`; targets hold for the worst run (the max)."""
    out: list[Row] = []

    def add(
        figure: str,
        unit: str,
        summary: dict[str, Any] | None,
        target: str = "",
        check: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        if summary is not None:
            out.append(Row(figure, unit, summary, target, check(summary) if check else None))

    for platform in PLATFORMS:
        build = results.get("build", {}).get(platform)
        if build:
            add(f"build {platform}: k8scc", "s", build["k8scc_s"])
            add(f"build {platform}: host", "s", build["host_s"])
            add(f"build {platform}: k8scc/host", "x", build["ratio"], "≤ 1.10", _at_most(1.10))
            add(f"build {platform}: k8scc - host", "s", build.get("overhead_s"))
            add(f"build {platform}: API requests", "", build["requests"])
            if "api_s" in build:
                add(f"build {platform}: k8scc, files through the API", "s", build["api_s"])
                add(
                    f"build {platform}: k8scc api mode/host",
                    "x",
                    build["api_ratio"],
                    "≤ 1.10",
                    _at_most(1.10),
                )
                add(f"build {platform}: api mode - host", "s", build["api_overhead_s"])
                add(f"build {platform}: API requests (api mode)", "", build["api_requests"])
    for platform in PLATFORMS:
        cache = results.get("cache", {}).get(platform)
        if cache:
            add(f"cached build {platform}: cold", "s", cache["cold_s"])
            add(f"cached build {platform}: second version (warm)", "s", cache["warm_s"])
            target, check = (
                (f"≥ {WARM_SPEEDUP_TARGET}", _at_least(WARM_SPEEDUP_TARGET))
                if platform == "golang"
                else ("", None)
            )
            add(f"cached build {platform}: cold/warm", "x", cache["speedup"], target, check)
            add(f"cached build {platform}: two chaincodes at once", "s", cache["together_s"])
    if "detect_ms" in results:
        add("detect", "ms", results["detect_ms"], "≤ 60 ms", _at_most(60))
    add("detect (config with a platforms section)", "ms", results.get("detect_platforms_ms"))
    launch = results.get("launch", {})
    for key, label in launch_labels(launch).items():
        figures = launch.get(key)
        if not figures:
            continue
        add(f"launch → registered ({label})", "s", figures["registered_s"])
        add(
            f"run start → pod accepted ({label})",
            "ms",
            figures.get("accepted_ms"),
            f"≤ {ACCEPTED_TARGET_MS} ms median",
            lambda summary: bool(summary["median"] <= ACCEPTED_TARGET_MS),
        )
        if "first_request_ms" in figures:
            add(f"run start → first request ({label})", "ms", figures["first_request_ms"])
        add(f"launch → pod Running ({label})", "s", figures["running_s"])
        rss = f"≤ {RSS_TARGET_MB} MB", _at_most(RSS_TARGET_MB)
        add(f"run peak RSS ({label})", "MB", figures["rss_peak_mb"], *rss)
        add(f"run steady RSS ({label})", "MB", figures["rss_steady_mb"], *rss)
        requests = f"≤ {REQUESTS_TARGET}", _at_most(REQUESTS_TARGET)
        add(f"API requests per launch ({label})", "", figures["requests"], *requests)
    if launch.get("empty") and launch.get("api"):
        api = launch["api"]
        size = f"{launch['api_bytes'] / MB:.0f} MB"
        add(f"launch, files through the API: stream into the pod ({size})", "s", api["stream_s"])
        if "stream_opened_s" in api:
            label = f"launch, files through the API: stream into the pod ({size}), with its opening"
            add(label, "s", api["stream_opened_s"])
        add(
            "launch → registered: api mode - volume mode",
            "s",
            launch["api_later_s"],
            "≤ stream time",
            lambda summary: bool(summary["median"] <= api["stream_s"]["median"]),
        )
    api_build = results.get("api_build", {})
    for key, label in launch_labels(launch).items():
        if api_build.get(key):
            add(f"API requests per build ({label})", "", api_build[key]["requests"])
    if launch.get("empty") and launch.get("busy"):
        empty, busy = launch["empty"]["requests"], launch["busy"]["requests"]
        same = busy["max"] <= empty["max"]
        out.append(
            Row(
                "API requests per launch: growth with unrelated pods",
                "",
                {k: busy[k] - empty[k] for k in ("median", "min", "max")} | {"runs": busy["runs"]},
                "none",
                same,
            )
        )
    for count, figures in sorted(results.get("concurrency", {}).items(), key=lambda i: int(i[0])):
        add(
            f"{count} concurrent launches: registered",
            f"of {count}",
            figures["registered"],
            f"all {count}",
            _at_least(int(count)),
        )
        add(f"{count} concurrent launches → all registered", "s", figures["all_registered_s"])
        add(f"{count} concurrent launches: total run RSS", "MB", figures["rss_total_mb"])
    transfer = results.get("transfer")
    if transfer:
        size = f"{transfer['bytes'] / MB:.0f} MB, {transfer['files']} files"
        add(f"transfer ({size}): VolumeTransfer", "MB/s", transfer["volume_mb_s"])
        add(f"transfer ({size}): cp -a", "MB/s", transfer["cp_mb_s"])
        add("transfer: cp -a time / VolumeTransfer time", "x", transfer["ratio"])
    return out


def _number(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def table(all_rows: list[Row]) -> str:
    lines = [
        "| figure | median | min | max | runs | target | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in all_rows:
        unit = f" {row.unit}" if row.unit else ""
        s = row.summary
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(
            f"| {row.figure} | {_number(s['median'])}{unit} | {_number(s['min'])} "
            f"| {_number(s['max'])} | {s['runs']} | {row.target} | {met} |"
        )
    return "\n".join(lines)


def launch_labels(launch: dict[str, Any]) -> dict[str, str]:
    """The launch sides a run measured, by key, as tables and plots name them."""
    labels = {
        "empty": "empty namespace",
        "busy": f"{launch.get('unrelated_pods', 0)} unrelated pods",
        "api": "files through the API, empty namespace",
    }
    return {key: label for key, label in labels.items() if key in launch}


def _breakdowns(results: dict[str, Any]) -> list[str]:
    lines = []
    sources = [
        (f"build {p}", results.get("build", {}).get(p, {}).get("breakdown")) for p in PLATFORMS
    ]
    for key, where in launch_labels(results.get("launch", {})).items():
        for section, what in (("launch", "launch"), ("api_build", "minimal node build")):
            counts = results.get(section, {}).get(key, {}).get("breakdown")
            sources.append((f"{what} ({where})", counts))
    for label, counts in sources:
        if counts:
            parts = ", ".join(f"{kind}: {n}" for kind, n in counts.items())
            lines.append(f"- {label}: {parts}")
    return lines


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    all_rows = rows(results)
    missed = [r.figure for r in all_rows if r.met is False]
    lines = [
        f"# k8scc benchmark {results['started']}",
        "",
        f"{results['runs']} runs per figure ({results['build_runs']} per build figure; median, "
        f"min, max){', quick' if results['quick'] else ''}; "
        f"{results['cpus']} CPUs, load average {results['load_before']:.2f} at the start; "
        f"suite took {results['duration_s']:.0f} s.",
        "",
        table(all_rows),
        "",
        f"Targets missed: {', '.join(missed) if missed else 'none'}.",
    ]
    breakdowns = _breakdowns(results)
    if breakdowns:
        lines += ["", "API requests by verb and resource, in the median run:", "", *breakdowns]
    errors = results.get("errors", {})
    if errors:
        lines += ["", "Sections that failed:", ""]
        lines += [f"- {section}: {error}" for section, error in errors.items()]
    notes = results.get("notes", [])
    if notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    if plots:
        lines += ["", *(f"![{name}]({name})" for name in plots)]
    return "\n".join(lines) + "\n"
