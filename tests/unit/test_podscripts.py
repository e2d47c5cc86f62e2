"""The scripts pods run in transfer mode api, run here by /bin/sh with the pod's directory
moved below tmp_path."""

from __future__ import annotations

import signal
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


def start_build(pod_dir: Path, *command: str) -> subprocess.Popen[str]:
    script = podscripts.WAIT_THEN_BUILD.replace(podscripts.POD_DIR, str(pod_dir))
    Path(podscripts.RECEIVED.replace(podscripts.POD_DIR, str(pod_dir))).touch()
    return subprocess.Popen(
        ["/bin/sh", "-c", script, "k8scc-wait", "10", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_failed_build_says_how_its_command_ended_in_its_last_line(tmp_path: Path) -> None:
    build = start_build(tmp_path, "sh", "-c", "echo built; exit 3")
    stdout, stderr = build.communicate(timeout=30)
    assert build.returncode == 3, stderr
    assert stdout == f"built\n{podscripts.BUILT} 3\n"
    assert stderr == f"{podscripts.BUILT} 3\n"


def test_a_build_that_worked_says_so_then_holds_its_output_until_told_to_stop(
    tmp_path: Path,
) -> None:
    """Its container stays, so that the output can be taken from it, and ends at once when
    its pod is deleted."""
    build = start_build(tmp_path, "sh", "-c", "echo built")
    assert build.stdout is not None and build.stderr is not None
    assert build.stdout.readline() == "built\n"
    assert build.stdout.readline() == f"{podscripts.BUILT} 0\n"
    assert build.stderr.readline() == f"{podscripts.BUILT} 0\n"
    with pytest.raises(subprocess.TimeoutExpired):
        build.wait(timeout=0.5)
    build.terminate()
    stdout, stderr = build.communicate(timeout=5)
    assert build.returncode == 0, stderr
    assert stdout == stderr == ""


def test_a_build_told_to_stop_passes_it_on_and_says_so(tmp_path: Path) -> None:
    """The kubelet signals the container's first process, the shell: its command must stop
    too, or a deleted build pod would run on for its whole grace period."""
    build = start_build(
        tmp_path,
        "sh",
        "-c",
        'trap "echo stopping; exit 7" TERM; echo ready; while :; do sleep 0.1; done',
    )
    assert build.stdout is not None
    assert build.stdout.readline() == "ready\n"
    build.terminate()
    stdout, _ = build.communicate(timeout=30)
    assert build.returncode == 7
    assert stdout == f"stopping\n{podscripts.BUILT} 7\n"


def catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    raise AssertionError(f"no SigCgt line for process {pid}")


@pytest.mark.parametrize("script", ["WAIT_THEN_EXEC", "WAIT_THEN_BUILD"])
def test_a_pod_deleted_before_its_files_arrive_ends_at_once(tmp_path: Path, script: str) -> None:
    """As a container's first process the shell gets no signal it does not catch, so without
    a trap of its own a pod deleted while it waits would wait on for its grace period."""
    text = getattr(podscripts, script).replace(podscripts.POD_DIR, str(tmp_path))
    waiting = subprocess.Popen(
        ["/bin/sh", "-c", text, "k8scc-wait", "20", "echo", "started"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 5
        while not catches_sigterm(waiting.pid):
            assert time.monotonic() < deadline, "the waiting shell never caught SIGTERM"
            assert waiting.poll() is None, waiting.communicate()
            time.sleep(0.01)
        waiting.terminate()
        stdout, stderr = waiting.communicate(timeout=5)
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 143
    assert stdout == stderr == ""


def test_a_stop_that_comes_as_the_build_starts_reaches_its_command_once(tmp_path: Path) -> None:
    """The command itself asks for the stop, so it arrives while the shell may not yet know
    the command's process id."""
    build = start_build(
        tmp_path,
        "sh",
        "-c",
        'trap "echo stopping; exit 7" TERM; kill -TERM "$PPID"; while :; do sleep 0.1; done',
    )
    stdout, stderr = build.communicate(timeout=30)
    assert build.returncode == 7, stderr
    assert stdout == f"stopping\n{podscripts.BUILT} 7\n"


def test_a_build_told_to_stop_holds_nothing_even_if_its_command_ends_well(
    tmp_path: Path,
) -> None:
    """Its pod is being deleted: no one will take the output."""
    build = start_build(
        tmp_path,
        "sh",
        "-c",
        'trap "echo stopping; stopped=1" TERM; kill -TERM "$PPID"\n'
        'while [ -z "$stopped" ]; do sleep 0.05; done; echo done',
    )
    stdout, stderr = build.communicate(timeout=30)
    assert build.returncode == 0, stderr
    assert stdout == f"stopping\ndone\n{podscripts.BUILT} 0\n"
