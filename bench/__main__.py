"""`python -m bench`: starts a test bed (with the API server's audit log on), measures, and
writes bench/results/<UTC timestamp>.json, .md and -*.png."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import plots, report
from bench.suite import Bench, Settings
from testbed.cluster import Testbed

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("build", "cache", "detect", "launch", "concurrency", "transfer")
NOTES = [
    "Builds start with empty caches on both sides: a fresh HOME, so Go's module and build "
    "caches, npm's cache and Maven's repository are empty, as in the builder pod's emptyDir; "
    "dependencies are downloaded from the package registries in every build.",
    "The cache section gives each run a namespace with an empty build cache of its own: the "
    "sample is built as version 1 (cold), then as version 2 (warm: same chaincode, so same "
    "cache scope), then two other chaincodes build at once on that cache.",
    "API requests are those of k8scc's ServiceAccount from the API server's audit log, each "
    "counted once: at ResponseComplete, or at ResponseStarted for long-running requests "
    "(watches, followed logs), which complete only when the launch ends.",
    "A launch is counted from `run` starting until it has exited after SIGTERM, cleanup "
    "included; the chaincode runs with peer TLS on (a per-launch Secret).",
    "Launches use the Go sample built by Fabric's build command on the host plus "
    "k8scc-build.json, as `build` leaves it.",
]


def settings(arguments: argparse.Namespace) -> Settings:
    if arguments.quick:
        return Settings(
            runs=arguments.runs or 1,
            build_runs=arguments.build_runs or arguments.runs or 1,
            platforms=tuple(arguments.platforms or ["node"]),
            unrelated_pods=20,
            concurrency=(3, 5),
            transfer_bytes=20 * 1024 * 1024,
            settle_seconds=1.0,
        )
    runs = arguments.runs or 5
    return Settings(
        runs=runs,
        build_runs=arguments.build_runs or runs,
        platforms=tuple(arguments.platforms or ["golang", "node", "java"]),
        unrelated_pods=200,
        concurrency=(20, 50),
        transfer_bytes=200 * 1024 * 1024,
        settle_seconds=3.0,
    )


def log(message: str) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    print(f"bench {stamp} {message}", file=sys.stderr, flush=True)


def measure(bench: Bench, sections: list[str], results: dict[str, Any]) -> None:
    """Each section on its own: one that fails is reported in `errors`, the others still run."""
    output: list[Path] = []

    def launch_material() -> Path:
        if not output:
            output.append(bench.golang_output())
        return output[0]

    steps: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "build": ("build overhead", lambda: {"build": bench.build_overhead()}),
        "cache": ("build cache: cold and warm", lambda: {"cache": bench.build_cache()}),
        "detect": ("detect", bench.detect),
        "launch": (
            "launches: latency, memory, API load",
            lambda: bench.launches(launch_material()),
        ),
        "concurrency": (
            "concurrent launches",
            lambda: {"concurrency": bench.concurrency(launch_material())},
        ),
        "transfer": ("transfer", lambda: {"transfer": bench.transfer()}),
    }
    for section in SECTIONS:
        if section not in sections:
            continue
        title, step = steps[section]
        log(title)
        try:
            results.update(step())
        except Exception as error:
            log(f"{section} failed: {error}")
            results.setdefault("errors", {})[section] = f"{type(error).__name__}: {error}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, help="runs per figure (default 5; 1 with --quick)")
    parser.add_argument("--build-runs", type=int, help="runs per build figure (default --runs)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run, small sizes")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="measure only these")
    parser.add_argument("--platforms", nargs="+", choices=report.PLATFORMS)
    parser.add_argument("--results", type=Path, default=RESULTS, help="output directory")
    arguments = parser.parse_args()
    chosen = settings(arguments)
    if min(chosen.runs, chosen.build_runs) < 1:
        print("bench: --runs and --build-runs must be at least 1", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc)
    stem = started.strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "runs": chosen.runs,
        "build_runs": chosen.build_runs,
        "quick": arguments.quick,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
        "notes": NOTES,
    }
    clock = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="k8scc-bench-"))
    try:
        testbed = Testbed(workdir / "testbed")
        testbed.control_plane.audit = True
        log(f"starting the test bed in {workdir}")
        with testbed:
            bench = Bench(testbed, workdir / "runs", chosen, log)
            measure(bench, list(arguments.only or SECTIONS), results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["duration_s"] = time.monotonic() - clock
    results["load_after"] = os.getloadavg()[0]
    arguments.results.mkdir(parents=True, exist_ok=True)
    names = plots.write(results, arguments.results, stem)
    (arguments.results / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    summary = report.markdown(results, names)
    (arguments.results / f"{stem}.md").write_text(summary)
    print(summary)
    log(f"wrote {arguments.results / stem}.{{json,md}} and {len(names)} plots")
    if results.get("errors"):
        log(f"sections that failed: {', '.join(results['errors'])}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
