"""The scripts pods run in transfer mode api, run here by /bin/sh with the pod's directory
moved below tmp_path."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from k8scc import podscripts

pytestmark = pytest.mark.unit


def run_wait_then_exec(pod_dir: Path, seconds: int) -> subprocess.CompletedProcess[str]:
    script = podscripts.WAIT_THEN_EXEC.replace(podscripts.POD_DIR, str(pod_dir))
    return subprocess.run(
        [
            "/bin/sh",
            "-c",
            script,
            "k8scc-wait",
            str(seconds),
            "echo",
            "launched",
            "-peer.address=x",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_chaincode_starts_once_its_files_are_in(tmp_path: Path) -> None:
    received = Path(podscripts.RECEIVED.replace(podscripts.POD_DIR, str(tmp_path)))
    arrival = threading.Timer(0.3, received.touch)
    arrival.start()
    started = time.monotonic()
    result = run_wait_then_exec(tmp_path, 10)
    arrival.join()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "launched -peer.address=x\n"
    assert time.monotonic() - started >= 0.3


def test_a_pod_no_one_feeds_ends_in_one_line(tmp_path: Path) -> None:
    result = run_wait_then_exec(tmp_path, 1)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "k8scc: no files arrived within 1 s\n"
