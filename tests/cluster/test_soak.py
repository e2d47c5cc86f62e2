"""A hundred launches and stops of one chaincode: each leaves nothing behind, and nothing the
test bed or the test holds (file descriptors, threads, processes, pod directories) grows."""

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

LAUNCHES = 100
WARM_UP = 10
# Descriptors and threads come and go with connections in flight; a leak of one per launch
# would add 90 between the two samples.
SLACK = 8


def held(testbed: Testbed) -> dict[str, int]:
    agent = Path(f"/proc/{testbed.agent_pid}")
    pods = testbed.workdir / "node" / "pods"
    assert pods.is_dir()
    return {
        "agent fds": len(list((agent / "fd").iterdir())),
        "agent threads": len(list((agent / "task").iterdir())),
        "agent children": len(_descendants(testbed.agent_pid)),
        "pod directories": len(list(pods.iterdir())),
        "test fds": len(os.listdir("/proc/self/fd")),
    }


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            found += map(int, children)
            pending += map(int, children)
    return found


def test_a_hundred_launches_leave_nothing_and_nothing_grows(
    tmp_path: Path, golang_output: Path
) -> None:
    # A test bed of its own, so that what the node agent holds is this test's alone.
    with Testbed(tmp_path / "bed") as testbed:
        testbed.control_plane.create_namespace("soak")
        volume = transfer_volume(testbed.control_plane, "soak", tmp_path / "volume")
        apply_rbac(testbed.control_plane, "soak")
        builder = make_builder(testbed, "soak", volume, tmp_path)
        admin = testbed.control_plane.client()
        try:
            samples = soak(testbed, builder, admin, golang_output, tmp_path)
        finally:
            admin.close()
    first, last = samples
    grown = {key: (first[key], last[key]) for key in first if last[key] > first[key] + SLACK}
    assert grown == {}, f"grew from launch {WARM_UP} to {LAUNCHES}: {grown}"
    assert last["agent children"] == 0 and last["pod directories"] == 0, last
    print(f"held after launch {WARM_UP}: {first}; after launch {LAUNCHES}: {last}")


def soak(
    testbed: Testbed, builder: Builder, admin: Client, output: Path, workdir: Path
) -> list[dict[str, int]]:
    """Launches and stops LAUNCHES times; what is held after WARM_UP launches and at the end."""
    samples = []
    with FakePeer(tls=True) as peer:
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
                samples.append(held(testbed))
    return samples
