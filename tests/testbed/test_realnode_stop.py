"""Stopping the real node puts the host back as it was, with a pod still running; the node
works from a work directory of any length.

The host holds one real node at a time: this test runs before the session's starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import realnode
from testbed.cluster import Testbed
from tests.support.pods import phase_in, wait_for
from tests.testbed.test_realnode import busybox_pod

pytestmark = [pytest.mark.cluster, pytest.mark.own_node, pytest.mark.timeout(300)]


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    before = realnode.record_host()
    # A long work directory, as pytest's numbered ones grow to: the node's sockets must not
    # depend on it (a Unix socket path holds at most 107 bytes).
    workdir = tmp_path / ("long-" * 12) / "bed"
    testbed = Testbed(workdir)
    testbed.start()
    try:
        client = testbed.control_plane.client()
        testbed.control_plane.create_namespace("left")
        client.create(busybox_pod("running", "exec sleep 1000"), namespace="left")
        wait_for(client, "running", "left", phase_in("Running"))
    finally:
        testbed.stop()
    assert realnode.leftovers(before, tmp_path) == []
