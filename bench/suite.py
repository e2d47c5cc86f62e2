"""The measurements, run against a test bed of their own. Each returns the part of the results
document it owns: summaries (median, min, max) plus the raw runs they come from."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod

from bench import audit, hostbuild, stats, treegen
from k8scc import archive, names
from k8scc import config as configuration
from k8scc.buildinfo import BuildInfo
from k8scc.platforms import PLATFORMS
from k8scc.transfer import OUTPUT, OUTPUT_ARCHIVE, VolumeTransfer
from testbed.cluster import Testbed
from tests.support.builder import (
    SAMPLE_PATHS,
    Builder,
    RunningStep,
    apply_rbac,
    make_builder,
    package_source,
    small_node_package,
)
from tests.support.fakepeer import FakePeer
from tests.support.pods import shell_pod

PEER_ID = "peer0.org1.example.com"
ACCOUNT = "k8scc"
BUILT_FILE = {"golang": "chaincode", "node": "package.json", "java": "chaincode.jar"}
MB = 1024 * 1024
# Generous: a cold Java build downloads Maven's plugins, and 50 pods start on 2 cores.
# No build cache: the overhead is measured against a host build that starts empty too; the
# cache section gives its spaces caches of their own.
BUILDER_CONFIG = {
    "timeouts": {"stuck": "60s", "start": "300s", "build": "900s"},
    "buildCache": None,
}
CACHE_CLAIM = "bench-cache"


@dataclass(frozen=True)
class Settings:
    runs: int
    build_runs: int
    platforms: tuple[str, ...]
    unrelated_pods: int
    concurrency: tuple[int, ...]
    transfer_bytes: int
    settle_seconds: float


def summary(values: list[float]) -> dict[str, Any]:
    return stats.summarise(values).to_dict()


def built(output: Path, platform: str) -> bool:
    """Whether BUILD_OUTPUT_DIR holds the platform's build, as a tree or (transfer.mode api)
    as the archive a launch sends."""
    if (output / OUTPUT_ARCHIVE).is_file():
        with tarfile.open(output / OUTPUT_ARCHIVE) as kept:
            return BUILT_FILE[platform] in kept.getnames()
    return (output / OUTPUT / BUILT_FILE[platform]).exists()


def proc_status(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda run: float(run[key]))
    return ordered[(len(ordered) - 1) // 2]


class PodWatch:
    """When each pod of a namespace was first seen Running (monotonic clock)."""

    def __init__(self, client: Client, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self._running: dict[str, float] = {}
        self._changed = threading.Condition()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            with contextlib.suppress(httpx2.HTTPError, ApiError):
                for _, pod in self._client.watch(Pod, namespace=self._namespace):
                    name = pod.metadata.name if pod.metadata else None
                    phase = pod.status.phase if pod.status else None
                    if name and phase == "Running":
                        with self._changed:
                            self._running.setdefault(name, time.monotonic())
                            self._changed.notify_all()
            time.sleep(0.5)

    def running_at(self, name: str, timeout: float) -> float:
        with self._changed:
            if not self._changed.wait_for(lambda: name in self._running, timeout):
                raise RuntimeError(f"pod {self._namespace}/{name} never ran")
            return self._running[name]


@dataclass
class Space:
    """A namespace with the transfer PVC, the k8scc RBAC and a builder acting as it."""

    name: str
    builder: Builder
    watch: PodWatch
    api: bool


@dataclass
class Bench:
    testbed: Testbed
    workdir: Path
    settings: Settings
    log: Callable[[str], None]
    admin: Client = field(init=False)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.admin = self.testbed.control_plane.client()

    def scratch(self, label: str) -> Path:
        path = self.workdir / f"{label}-{next(self._ids)}"
        path.mkdir(parents=True)
        return path

    def space(self, label: str, cached: bool = False, api: bool = False) -> Space:
        """`cached`: with an empty build cache of the space's own; `api`: files through the
        API (transfer.mode api), with no transfer claim."""
        name = f"bench-{label}-{next(self._ids)}"
        workdir = self.scratch(name)
        control_plane = self.testbed.control_plane
        # Java runs as its image's user, which `baseline` admits; the level changes no timing.
        control_plane.create_namespace(name, enforce="baseline")
        for claim, wanted in (("transfer", not api), (CACHE_CLAIM, cached)):
            if wanted:
                volume = workdir / claim
                volume.mkdir()
                volume.chmod(0o777)
                control_plane.create_local_volume(name, claim, volume)
        apply_rbac(control_plane, name)
        config = {**BUILDER_CONFIG, "buildCache": {"claimName": CACHE_CLAIM} if cached else None}
        if api:
            config["transfer"] = {"mode": "api"}
        # Credentials as a peer in a pod has them: its ServiceAccount's files, no kubeconfig,
        # in a namespace of its own, as deploy/ recommends (so no pod of it is looked up).
        builder = make_builder(
            self.testbed,
            name,
            workdir / "transfer",
            workdir,
            config,
            ACCOUNT,
            peer_namespace=f"{name}-peer",
        )
        return Space(name, builder, PodWatch(self.testbed.control_plane.client(), name), api)

    def add_unrelated_pods(self, space: Space, count: int) -> None:
        """Pods that stay Pending: nothing matches their nodeSelector."""
        for index in range(count):
            pod = shell_pod(
                f"unrelated-{index}", "sleep 3600", nodeSelector={"k8scc.bench/nowhere": "true"}
            )
            self.admin.create(pod, namespace=space.name)

    def audit_events(self) -> list[dict[str, Any]]:
        return audit.read_events(self.testbed.control_plane.audit_log)

    def user(self, space: Space) -> str:
        return audit.serviceaccount_user(space.name, ACCOUNT)

    def requests(self, space: Space, since: float, until: float) -> list[audit.Request]:
        return audit.requests_by(self.audit_events(), self.user(space), since, until)

    # -- 1. build overhead ----------------------------------------------------------------------

    def build_overhead(self) -> dict[str, Any]:
        """Each run builds the sample three ways side by side: through k8scc with the transfer
        volume (`k8scc`), through k8scc with files through the API (`api`), and on the host."""
        spaces = {"k8scc": self.space("build"), "api": self.space("build-api", api=True)}
        config = configuration.load(spaces["k8scc"].builder.directory / "k8scc.yaml")
        results: dict[str, Any] = {}
        for platform in self.settings.platforms:
            source, metadata = package_source(platform, self.scratch(f"src-{platform}"))
            runs: list[dict[str, Any]] = []
            for run in range(self.settings.build_runs):
                measured: dict[str, Any] = {}
                for side in stats.interleaved(run, "k8scc", "api", "host"):
                    if side == "host":
                        measured["host_s"] = self._host_build(config, platform, source)
                        continue
                    since = time.time()
                    measured[f"{side}_s"] = self._k8scc_build(
                        spaces[side], platform, source, metadata
                    )
                    measured[f"{side}_window"] = (since, time.time())
                self.log(
                    f"build {platform} run {run + 1}: k8scc {measured['k8scc_s']:.1f} s, "
                    f"api mode {measured['api_s']:.1f} s, host {measured['host_s']:.1f} s"
                )
                runs.append(measured)
            for measured in runs:
                for side, space in spaces.items():
                    requests = self.requests(space, *measured.pop(f"{side}_window"))
                    measured[f"{side}_requests"] = len(requests)
                    measured[f"{side}_breakdown"] = audit.breakdown(requests)
            host = [r["host_s"] for r in runs]
            results[platform] = {"host_s": summary(host), "runs": runs}
            for side, prefix in (("k8scc", ""), ("api", "api_")):
                seconds = [r[f"{side}_s"] for r in runs]
                results[platform] |= {
                    f"{side}_s": summary(seconds),
                    f"{prefix}ratio": summary(stats.paired_ratios(seconds, host)),
                    # Seconds k8scc adds: the part of the ratio that is k8scc's, whatever the
                    # build's own (network-bound, noisy) length.
                    f"{prefix}overhead_s": summary(
                        [a - b for a, b in zip(seconds, host, strict=True)]
                    ),
                    f"{prefix}requests": summary([r[f"{side}_requests"] for r in runs]),
                    f"{prefix}breakdown": _median_run(runs, f"{side}_requests")[
                        f"{side}_breakdown"
                    ],
                }
        return results

    # -- 2. build cache ------------------------------------------------------------------------

    def build_cache(self) -> dict[str, Any]:
        """Per platform: the sample built into an empty cache (version 1), then a second
        version of it (the warm rebuild), then two other chaincodes at once on that cache."""
        results: dict[str, Any] = {}
        for platform in self.settings.platforms:
            runs: list[dict[str, float]] = []
            for run in range(self.settings.build_runs):
                space = self.space(f"cache-{platform}", cached=True)
                measured = {
                    f"{version}_s": self._k8scc_build(
                        space, platform, *package_source(platform, self.scratch(version), label)
                    )
                    for version, label in (("cold", "cached_1.0"), ("warm", "cached_2.0"))
                }
                measured["together_s"] = self._builds_at_once(space, platform)
                self.log(
                    f"cache {platform} run {run + 1}: cold {measured['cold_s']:.1f} s, warm "
                    f"{measured['warm_s']:.1f} s, two at once {measured['together_s']:.1f} s"
                )
                runs.append(measured)
            cold = [r["cold_s"] for r in runs]
            warm = [r["warm_s"] for r in runs]
            results[platform] = {
                "cold_s": summary(cold),
                "warm_s": summary(warm),
                "speedup": summary(stats.paired_ratios(cold, warm)),
                "together_s": summary([r["together_s"] for r in runs]),
                "runs": runs,
            }
        return results

    def _builds_at_once(self, space: Space, platform: str) -> float:
        steps = []
        started = time.monotonic()
        for label in ("first_1.0", "second_1.0"):
            scratch = self.scratch(f"together-{platform}")
            source, metadata = package_source(platform, scratch, label)
            output = scratch / "bld"
            output.mkdir()
            steps.append((space.builder.start("build", source, metadata, output), output))
        for step, output in steps:
            code = step.process.wait(1200)
            step.stop()
            if code != 0 or not built(output, platform):
                raise RuntimeError(f"concurrent cached build of {platform} failed:\n{step.stderr}")
        return time.monotonic() - started

    def _k8scc_build(self, space: Space, platform: str, source: Path, metadata: Path) -> float:
        output = self.scratch(f"bld-{platform}")
        started = time.monotonic()
        step = space.builder.run("build", source, metadata, output, timeout=1200)
        elapsed = time.monotonic() - started
        if step.returncode != 0 or not built(output, platform):
            raise RuntimeError(f"k8scc build of {platform} failed:\n{step.stderr}")
        shutil.rmtree(output)
        return elapsed

    def _host_build(self, config: configuration.Config, platform: str, source: Path) -> float:
        root = self.scratch(f"host-{platform}")
        settings = config.platforms[platform]
        build = hostbuild.prepare(
            config,
            PLATFORMS[platform],
            SAMPLE_PATHS[platform],
            source,
            root / "fs",
            hostbuild.overlay(settings.build_image),
            hostbuild.PATH,
        )
        with (root / "build.log").open("wb") as log:
            started = time.monotonic()
            code = subprocess.run(
                build.argv,
                env=build.env,
                cwd=build.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
            elapsed = time.monotonic() - started
        if code != 0 or not (build.output / BUILT_FILE[platform]).exists():
            raise RuntimeError(f"host build of {platform} failed; see {root / 'build.log'}")
        shutil.rmtree(root)
        return elapsed

    # -- 3. detect ------------------------------------------------------------------------------

    def detect(self) -> dict[str, Any]:
        """With the bench's configuration, which detect need not parse, and with one that has a
        `platforms` section, which it must; the two alternate."""
        space = self.space("detect")
        source, metadata = package_source("golang", self.scratch("src-detect"))
        disabling = make_builder(
            self.testbed,
            space.name,
            space.builder.transfer,
            self.scratch("detect-platforms"),
            {**BUILDER_CONFIG, "platforms": {"java": None}},
            ACCOUNT,
        )
        builders = {"detect_ms": space.builder, "detect_platforms_ms": disabling}
        times: dict[str, list[float]] = {figure: [] for figure in builders}
        for run in range(max(self.settings.runs, 10)):
            for figure in stats.interleaved(run, "detect_ms", "detect_platforms_ms"):
                started = time.monotonic()
                detected = builders[figure].run("detect", source, metadata)
                times[figure].append((time.monotonic() - started) * 1000)
                if detected.returncode != 0:
                    raise RuntimeError(f"detect failed:\n{detected.stderr}")
        return {figure: summary(values) for figure, values in times.items()}

    # -- 2, 4, 5. launches: latency, memory, API load with and without unrelated pods ----------

    def golang_output(self) -> Path:
        """BUILD_OUTPUT_DIR of the Go sample as k8scc build leaves it: Fabric's build command
        run on the host with its warm caches, plus k8scc-build.json."""
        workdir = self.scratch("golang-output")
        source, _ = package_source("golang", workdir)
        config = configuration.load(self.space("output").builder.directory / "k8scc.yaml")
        platform = PLATFORMS["golang"]
        build = hostbuild.prepare(
            config,
            platform,
            SAMPLE_PATHS["golang"],
            source,
            workdir / "fs",
            None,
            hostbuild.PATH,
        )
        del build.env["HOME"]  # the host's own, with its caches
        env = {**_host_env(), **build.env}
        subprocess.run(build.argv, env=env, cwd=build.cwd, check=True, capture_output=True)
        output = workdir / "bld"
        shutil.copytree(build.output, output / "output")
        shutil.copytree(source / "META-INF", output / "META-INF")
        settings = config.platforms["golang"]
        BuildInfo("golang", settings.build_image, settings.run_image, "asset_1.0", "bench").write(
            output
        )
        return output

    def built_in(self, space: Space, output: Path) -> Path:
        """`output` as `build` in `space` leaves it: with the record of the space's own
        configuration, which `run` reads instead of parsing the YAML, and with no volume the
        tree kept as the archive a launch sends."""
        copy = self.scratch(f"bld-{space.name}")
        shutil.copytree(output, copy, dirs_exist_ok=True)
        configuration.record(space.builder.directory / "k8scc.yaml", copy)
        if space.api:
            with tempfile.TemporaryFile() as packed, (copy / OUTPUT_ARCHIVE).open("xb") as kept:
                archive.pack(copy / OUTPUT, packed, "build output", 1 << 40)
                packed.seek(0)
                archive.repack(packed, kept, "build output", 1 << 40, "")
            shutil.rmtree(copy / OUTPUT)
        return copy

    def launches(self, output: Path) -> dict[str, Any]:
        """Launches with the transfer volume in an empty namespace and beside unrelated pods,
        and with files through the API (`api`, empty namespace)."""
        empty, busy = self.space("empty"), self.space("busy")
        spaces = {"empty": empty, "busy": busy, "api": self.space("launch-api", api=True)}
        outputs = {key: self.built_in(space, output) for key, space in spaces.items()}
        self.add_unrelated_pods(busy, self.settings.unrelated_pods)
        tiny = small_node_package(self.scratch("tiny"), "tiny_1.0")
        launch_runs: dict[str, list[dict[str, Any]]] = {key: [] for key in spaces}
        build_runs: dict[str, list[dict[str, Any]]] = {"empty": [], "busy": []}
        with FakePeer(tls=True, host=self.testbed.host_address) as peer:
            for run in range(self.settings.runs):
                for key in stats.interleaved(run, *spaces):
                    space = spaces[key]
                    launched = self._launch(space, peer, outputs[key], f"{key}{run}")
                    launch_runs[key].append(launched)
                    self.log(
                        f"launch {key} run {run + 1}: registered {launched['registered_s']:.2f} s, "
                        f"steady RSS {launched['rss_steady_mb']:.1f} MB"
                    )
                for key in stats.interleaved(run, "empty", "busy"):
                    space = empty if key == "empty" else busy
                    build_runs[key].append(self._tiny_build(space, *tiny))
        results: dict[str, Any] = {
            "unrelated_pods": self.settings.unrelated_pods,
            "api_bytes": (outputs["api"] / OUTPUT_ARCHIVE).stat().st_size,
        }
        api_build: dict[str, Any] = {}
        events = self.audit_events()
        for key, space in spaces.items():
            user = self.user(space)
            for measured in launch_runs[key]:
                window = measured.pop("window")
                requests = audit.requests_by(events, user, *window)
                measured["stream_s"] = audit.stream_seconds(
                    events, user, window[0], window[1], "get pods/exec"
                )
                measured["stream_opened_s"] = audit.stream_seconds(
                    events, user, window[0], window[1], "get pods/exec", opening=True
                )
                registered = measured.pop("registered_wall")
                accepted = audit.first_answer(requests, "create pods")
                # Python's start, k8scc's imports and work, and the TLS handshake.
                measured["first_request_ms"] = (
                    1000 * (requests[0].received - window[0]) if requests else float("nan")
                )
                # From starting `run` to the API server storing the chaincode pod.
                measured["accepted_ms"] = (
                    1000 * (accepted - window[0]) if accepted is not None else float("nan")
                )
                measured["requests"] = len(requests)
                measured["requests_to_registered"] = sum(r.received < registered for r in requests)
                measured["breakdown"] = audit.breakdown(requests)
            runs = launch_runs[key]
            results[key] = {
                name: summary([r[name] for r in runs])
                for name in (
                    "registered_s",
                    "running_s",
                    "rss_peak_mb",
                    "rss_steady_mb",
                    "requests",
                    "requests_to_registered",
                    "accepted_ms",
                    "first_request_ms",
                    "stream_s",
                    "stream_opened_s",
                )
            }
            results[key]["breakdown"] = _median_run(runs, "requests")["breakdown"]
            results[key]["runs"] = runs
            if key not in build_runs:
                continue
            for measured in build_runs[key]:
                requests = self.requests(space, *measured.pop("window"))
                measured["requests"] = len(requests)
                measured["breakdown"] = audit.breakdown(requests)
            api_build[key] = {
                "requests": summary([r["requests"] for r in build_runs[key]]),
                "breakdown": _median_run(build_runs[key], "requests")["breakdown"],
                "runs": build_runs[key],
            }
        # Run by run: each run launched both ways, one after the other.
        paired = zip(launch_runs["api"], launch_runs["empty"], strict=True)
        results["api_later_s"] = summary([a["registered_s"] - v["registered_s"] for a, v in paired])
        return {"launch": results, "api_build": api_build}

    def _launch(self, space: Space, peer: FakePeer, output: Path, tag: str) -> dict[str, Any]:
        chaincode_id = package_id(f"bench{tag}")
        run_meta = self.scratch(f"run-{tag}")
        (run_meta / "chaincode.json").write_text(json.dumps(peer.chaincode_json(chaincode_id)))
        since = time.time()
        started = time.monotonic()
        run = space.builder.start("run", output, run_meta)
        try:
            if not peer.wait_registered(chaincode_id, timeout=300):
                raise RuntimeError(f"{chaincode_id} never registered:\n{run.stderr}")
            registered = time.monotonic() - started
            registered_wall = time.time()
            pod = names.chaincode_name(PEER_ID, chaincode_id)
            running = space.watch.running_at(pod, timeout=60) - started
            time.sleep(self.settings.settle_seconds)
            memory = proc_status(run.process.pid)
        finally:
            run.stop()
        if run.process.returncode == 0 or "stopped by SIGTERM" not in run.stderr:
            raise RuntimeError(f"run did not stop as asked:\n{run.stderr}")
        return {
            "registered_s": registered,
            "running_s": running,
            "rss_peak_mb": memory["VmHWM"],
            "rss_steady_mb": memory["VmRSS"],
            "registered_wall": registered_wall,
            "window": (since, time.time()),
        }

    def _tiny_build(self, space: Space, source: Path, metadata: Path) -> dict[str, Any]:
        output = self.scratch("tiny-bld")
        since = time.time()
        built = space.builder.run("build", source, metadata, output)
        if built.returncode != 0:
            raise RuntimeError(f"build of a minimal node package failed:\n{built.stderr}")
        return {"window": (since, time.time())}

    # -- 6. concurrency -------------------------------------------------------------------------

    def concurrency(self, output: Path) -> dict[str, Any]:
        space = self.space("many")
        output = self.built_in(space, output)
        levels = self.settings.concurrency
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in levels}
        with FakePeer(
            tls=True, max_streams=max(levels) + 8, host=self.testbed.host_address
        ) as peer:
            for run in range(self.settings.runs):
                order = levels if run % 2 == 0 else tuple(reversed(levels))
                for count in order:
                    measured = self._launch_many(space, peer, output, count, f"{count}x{run}")
                    runs[count].append(measured)
                    self.log(
                        f"{count} launches run {run + 1}: {measured['registered']} registered "
                        f"in {measured['all_registered_s']:.1f} s, "
                        f"RSS {measured['rss_total_mb']:.0f} MB"
                    )
        return {
            str(count): {
                name: summary([r[name] for r in runs[count]])
                for name in ("registered", "all_registered_s", "rss_total_mb", "rss_peak_total_mb")
            }
            | {"runs": runs[count]}
            for count in levels
        }

    def _launch_many(
        self, space: Space, peer: FakePeer, output: Path, count: int, tag: str
    ) -> dict[str, Any]:
        ids = [package_id(f"bench{tag}n{index}") for index in range(count)]
        steps: list[RunningStep] = []
        workdir = self.scratch(f"many-{tag}")
        for index, chaincode_id in enumerate(ids):
            run_meta = workdir / str(index)
            run_meta.mkdir()
            (run_meta / "chaincode.json").write_text(json.dumps(peer.chaincode_json(chaincode_id)))
        started = time.monotonic()
        try:
            for index in range(count):
                steps.append(space.builder.start("run", output, workdir / str(index)))
            deadline = started + 600
            while set(ids) - set(peer.registered()) and time.monotonic() < deadline:
                if any(step.process.poll() is not None for step in steps):
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            registered = len(set(ids) & set(peer.registered()))
            time.sleep(self.settings.settle_seconds)
            memory = [proc_status(s.process.pid) for s in steps if s.process.poll() is None]
        finally:
            stop_all(steps)
        self._wait_no_pods(space)
        return {
            "registered": registered,
            "all_registered_s": elapsed,
            "rss_total_mb": sum(m["VmRSS"] for m in memory),
            "rss_peak_total_mb": sum(m["VmHWM"] for m in memory),
        }

    def _wait_no_pods(self, space: Space, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while list(self.admin.list(Pod, namespace=space.name)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"pods of {space.name} still there after {timeout} s")
            time.sleep(0.5)

    # -- 7. transfer ----------------------------------------------------------------------------

    def transfer(self) -> dict[str, Any]:
        workdir = self.scratch("transfer")
        files = treegen.plan(self.settings.transfer_bytes)
        tree = workdir / "tree"
        treegen.write(tree, files)
        volume = workdir / "volume"
        volume.mkdir()
        transfer = VolumeTransfer(volume, "peer-bench")
        runs = []
        for run in range(self.settings.runs):
            measured = {}
            for side in stats.interleaved(run, "volume", "cp"):
                started = time.monotonic()
                if side == "volume":
                    transfer.stage_build("bench", tree)
                else:
                    subprocess.run(["cp", "-a", str(tree), str(workdir / "copy")], check=True)
                measured[f"{side}_s"] = time.monotonic() - started
                transfer.remove("bench")
                shutil.rmtree(workdir / "copy", ignore_errors=True)
            runs.append(measured)
            self.log(
                f"transfer run {run + 1}: VolumeTransfer {measured['volume_s']:.2f} s, "
                f"cp -a {measured['cp_s']:.2f} s"
            )
        shutil.rmtree(tree)
        size = self.settings.transfer_bytes
        volume_s = [r["volume_s"] for r in runs]
        cp_s = [r["cp_s"] for r in runs]
        return {
            "bytes": size,
            "files": len(files),
            "volume_mb_s": summary([size / MB / s for s in volume_s]),
            "cp_mb_s": summary([size / MB / s for s in cp_s]),
            "ratio": summary(stats.paired_ratios(cp_s, volume_s)),
            "runs": runs,
        }


def stop_all(steps: list[RunningStep], timeout: float = 120) -> None:
    """SIGTERM to every run at once, then a wait: a second SIGTERM would cut their cleanup
    short, and a kill would leave their pods behind."""
    for step in steps:
        with contextlib.suppress(ProcessLookupError):
            step.process.terminate()
    deadline = time.monotonic() + timeout
    for step in steps:
        try:
            step.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            step.process.kill()
            step.process.wait()


def package_id(label: str) -> str:
    return f"{label}_1.0:{hashlib.sha256(label.encode()).hexdigest()}"


def _host_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("HOME", "USER", "TMPDIR")}
