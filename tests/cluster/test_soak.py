"""Fifty launches and stops of one chaincode on the real node: each leaves nothing behind
in the API, the node ends up holding what it held before (shims, pod directories, network
namespaces, veths, addresses, cgroups), and what the kubelet, containerd and the test hold
(file descriptors, threads) does not grow."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from lightkube import Client

from testbed.cluster import Testbed
from tests.cluster.test_failures import launch
from tests.cluster.test_steps import wait_clean
from tests.support.builder import Builder, apply_rbac, make_builder, transfer_volume
from tests.support.fakepeer import FakePeer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

LAUNCHES = 50
WARM_UP = 10
# Descriptors and threads come and go with connections in flight; a leak of one per launch
# would add 40 between the two samples.
SLACK = 8
# What a pod holds on the node: back to its level before the soak once the pods are gone.
PER_POD = (
    "shims",
    "pod directories",
    "network namespaces",
    "veths",
    "pod addresses",
    "pod cgroups",
)


def held(testbed: Testbed) -> dict[str, int]:
    return testbed.real_node.held() | {"test fds": len(os.listdir("/proc/self/fd"))}


def settled(testbed: Testbed, level: dict[str, int], timeout: float = 60) -> dict[str, int]:
    """What is held once the kubelet's housekeeping has removed the last pod's remains (it
    does so a few seconds after the pod is gone from the API)."""
    deadline = time.monotonic() + timeout
    while True:
        now = held(testbed)
        if all(now[key] <= level[key] for key in PER_POD) or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def test_fifty_launches_leave_nothing_and_nothing_grows(
    testbed: Testbed, tmp_path: Path, golang_output: Path
) -> None:
    testbed.control_plane.create_namespace("soak")
    volume = transfer_volume(testbed.control_plane, "soak", tmp_path / "volume")
    apply_rbac(testbed.control_plane, "soak")
    builder = make_builder(testbed, "soak", volume, tmp_path)
    admin = testbed.control_plane.client()
    before = settled(testbed, held(testbed))
    try:
        first, last = soak(testbed, builder, admin, golang_output, tmp_path, before)
    finally:
        admin.close()
    grown = {key: (first[key], last[key]) for key in first if last[key] > first[key] + SLACK}
    assert grown == {}, f"grew from launch {WARM_UP} to {LAUNCHES}: {grown}"
    left = {key: (before[key], last[key]) for key in PER_POD if last[key] > before[key]}
    assert left == {}, f"left on the node after {LAUNCHES} launches: {left}"
    print(f"held before: {before}; after launch {WARM_UP}: {first}; after {LAUNCHES}: {last}")


def soak(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    output: Path,
    workdir: Path,
    level: dict[str, int],
) -> list[dict[str, int]]:
    """Launches and stops LAUNCHES times; what is held after WARM_UP launches and at the end,
    once the node has settled back to `level`."""
    samples = []
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        for index in range(LAUNCHES):
            run = launch(builder, output, workdir / f"run-{index}", peer)
            try:
                deadline = time.monotonic() + 60
                while len(peer.registrations()) <= index and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(peer.registrations()) == index + 1, run.stderr
            finally:
                code = run.stop()
            assert code != 0 and "stopped by SIGTERM" in run.stderr, run.stderr
            assert wait_clean(admin, "soak", builder.transfer) == [], f"launch {index + 1}"
            if index + 1 in (WARM_UP, LAUNCHES):
                samples.append(settled(testbed, level))
    return samples
