"""Exec streams through the real API server and kubelet, many times over: each command gets
all of its stdin while it runs, and everything it prints and its exit status come back. A
stream written from one thread while another read it broke a few times in a hundred."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from lightkube import Client

from k8scc import kubeconfig
from k8scc.kube import Kube
from testbed.cluster import Testbed
from tests.support.pods import shell_pod, wait_for

pytestmark = [pytest.mark.cluster]

ROUNDS = 200
STDIN_BYTES = 300_000
FILE_BYTES = 20_000


@pytest.mark.timeout(600)
def test_every_exec_returns_its_whole_output_and_status(
    testbed: Testbed, admin: Client, namespace: str
) -> None:
    script = f"head -c {FILE_BYTES} /dev/urandom > /tmp/file; trap 'exit 0' TERM; sleep 600 & wait"
    admin.create(shell_pod("streams", script), namespace=namespace)
    wait_for(admin, "streams", namespace, lambda pod: pod["status"].get("phase") == "Running")
    kube = Kube(kubeconfig.from_file(testbed.control_plane.admin_kubeconfig), namespace)
    expected_file = b""
    lost = []
    for round_ in range(ROUNDS):
        fed = round_ % 2 == 1
        data = os.urandom(STDIN_BYTES)
        reads = f"head -c {STDIN_BYTES} | sha256sum >&2; " if fed else ""
        command = ["/bin/sh", "-c", f"{reads}cat /tmp/file; exit {round_ % 3}"]
        printed = bytearray()
        try:
            exited = kube.exec(
                "streams", "main", command, io.BytesIO(data) if fed else None, printed.extend, 60
            )
        except Exception as error:  # every failure is counted, not just the first
            lost.append(f"round {round_}: {error}")
            continue
        expected_file = expected_file or bytes(printed)
        problems = [
            f"exit code {exited.code}" if exited.code != round_ % 3 else "",
            f"{len(printed)} bytes printed" if printed != expected_file else "",
            "stdin damaged"
            if fed and hashlib.sha256(data).hexdigest() not in exited.stderr
            else "",
        ]
        if any(problems):
            lost.append(f"round {round_}: {', '.join(p for p in problems if p)}")
    assert len(expected_file) == FILE_BYTES
    assert lost == [], f"{len(lost)} of {ROUNDS} streams lost something: {lost[:5]}"
