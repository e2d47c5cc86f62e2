"""How a pod's status reads as a step's outcome, init containers included: a build cache's
preparer runs before the builder, so what stops it must be told as clearly as the builder's;
and how a stop signal reaches a step waiting for its pod's events."""

from __future__ import annotations

import io
import queue
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

import pytest

from k8scc.kube import Kube
from k8scc.log import StepLog
from k8scc.podscripts import BUILT
from k8scc.steps import Terminated
from k8scc.supervise import Supervisor, failure, waiting_state

pytestmark = pytest.mark.unit


def pod(init: dict[str, Any] | None = None, build: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending"}
    if init is not None:
        status["initContainerStatuses"] = [{"name": "cache", "state": init}]
    if build is not None:
        status["containerStatuses"] = [{"name": "build", "state": build}]
    return {"status": status}


def test_an_init_container_whose_image_is_missing_is_stuck() -> None:
    missing = {"waiting": {"reason": "ErrImagePull", "message": "image x: not found"}}
    state = waiting_state(
        pod(init=missing, build={"waiting": {"reason": "PodInitializing"}}), "build", False
    )
    assert state is not None
    assert (state.reason, state.stuck) == ("ErrImagePull", True)


def test_a_running_init_container_is_not_waiting() -> None:
    assert waiting_state(pod(init={"running": {}}), "build", False) is None


def test_a_failed_init_container_is_the_reason_in_one_line() -> None:
    ended = {
        "terminated": {
            "reason": "Error",
            "exitCode": 1,
            "message": "mkdir: cannot create directory '/k8scc-cache/golang-500':\n"
            "Permission denied\n",
        }
    }
    text = failure(pod(init=ended, build={"waiting": {"reason": "PodInitializing"}}), "build")
    assert text == (
        "init container cache: Error, exit code 1: mkdir: cannot create directory "
        "'/k8scc-cache/golang-500': Permission denied"
    )


def test_a_succeeded_init_container_leaves_the_builders_reason() -> None:
    done = {"terminated": {"reason": "Completed", "exitCode": 0}}
    build = {"terminated": {"reason": "Error", "exitCode": 2}}
    assert failure(pod(init=done, build=build), "build") == "Error, exit code 2"


def test_the_pods_own_reason_comes_first() -> None:
    failed = pod(init={"running": {}})
    failed["status"].update(reason="DeadlineExceeded", message="Pod was active too long")
    assert failure(failed, "build") == "DeadlineExceeded: Pod was active too long"


def interrupted_at(instant: int, call: Callable[[], object]) -> BaseException | None:
    """Runs `call`, raising Terminated at its `instant`-th bytecode, as SIGTERM's handler
    raises it wherever the main thread is; what came out of `call`, None if it ran through."""

    def each_opcode(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal instant
        if event == "opcode":
            instant -= 1
            if instant == 0:
                raise Terminated("SIGTERM")
        return each_opcode

    def each_call(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        return each_opcode

    sys.settrace(each_call)
    try:
        call()
    except BaseException as error:  # what came out is the finding
        return error
    finally:
        sys.settrace(None)
    return None


def test_a_stop_signal_while_waiting_for_pod_events_arrives_as_itself() -> None:
    """run waits on its pod's events nearly all its life. A queue written in Python turned a
    Terminated raised inside its condition wait into 'RuntimeError: release unlocked lock'
    (seen once in fifteen launches of the bench), so run failed instead of stopping, or left
    it locked against the watch thread."""
    supervisor = Supervisor(cast(Kube, object()), StepLog("run"), "pod", "chaincode", 1, 1)
    instant = 0
    while True:
        instant += 1
        outcome = interrupted_at(instant, lambda: supervisor.events.get(timeout=0.001))
        if not isinstance(outcome, Terminated):
            break
        # The watch thread's next event must still get through.
        putting = threading.Thread(
            target=supervisor.events.put, args=(("MODIFIED", {}),), daemon=True
        )
        putting.start()
        putting.join(5)
        assert not putting.is_alive(), f"at bytecode {instant} the queue was left locked"
        assert supervisor.events.get(timeout=1) == ("MODIFIED", {})
    assert isinstance(outcome, queue.Empty), f"at bytecode {instant}: {outcome!r}"


class EndingBuild:
    """A build pod whose container has ended while the kubelet still holds its log stream open
    (it ends the stream only at its next check of the container, up to a second later)."""

    def __init__(
        self,
        *last_lines: str,
        seen_ending: bool = True,
        code: int = 0,
        ended_phase: str = "Running",
    ) -> None:
        self.stream_ends = threading.Event()
        self.lines = [
            f"2026-12-07T10:00:00.{index}00000000Z {line}\n".encode()
            for index, line in enumerate(["added 79 packages", *last_lines], start=1)
        ]
        self.pod_reads = 0
        self.seen_ending = threading.Event()
        if seen_ending:
            self.seen_ending.set()
        self.code = code
        self.ended_phase = ended_phase

    def watch_pod(self, name: str, uid: str, version: str, stop: threading.Event) -> Any:
        ended = {"terminated": {"reason": "Error", "exitCode": self.code}}
        running: dict[str, Any] = {"running": {}}
        for build in (running, ended):
            phase = "Running"
            if build is ended:
                self.seen_ending.wait()
                phase = self.ended_phase
            status = {"phase": phase, "containerStatuses": [{"name": "build", "state": build}]}
            yield "MODIFIED", {"metadata": {"name": name, "uid": uid}, "status": status}
        stop.wait()

    def log_stream(self, name: str, query: dict[str, str], seconds: float) -> Any:
        owner = self

        class Stream:
            def __enter__(self) -> Stream:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def readline(self, limit: int) -> bytes:
                if owner.lines:
                    return owner.lines.pop(0)
                owner.stream_ends.wait()
                return b""

        return Stream()

    def get_pod(self, name: str) -> dict[str, Any]:
        self.pod_reads += 1
        return {"metadata": {"uid": "other"}}


@pytest.mark.timeout(5)
def test_a_build_container_that_ended_is_reported_before_its_log_stream_ends() -> None:
    """build takes the output while the kubelet ends the log stream (up to a second after the
    container), and the stream's end needs no request to tell that it is final."""
    kube = EndingBuild()
    written = io.StringIO()
    supervisor = Supervisor(
        cast(Kube, kube), StepLog("build", stream=written), "pod", "build", 60, 60
    )
    created = {"metadata": {"uid": "u1", "resourceVersion": "1"}}
    outcome = supervisor.wait(created, container_ends=True)
    assert outcome.succeeded
    kube.stream_ends.set()
    supervisor.drain_logs()
    supervisor.close()
    assert "k8scc build: | added 79 packages\n" in written.getvalue()
    assert kube.pod_reads == 0


@pytest.mark.timeout(5)
def test_a_build_containers_last_line_tells_its_end_before_the_kubelet_does() -> None:
    """The kubelet reports a container's exit only at its next relist, up to a second later,
    and ends the log stream at its next check, once a second; the build's last line
    (podscripts.WAIT_THEN_BUILD), on stdout and on stderr, says both at once, and is not the
    build's own output."""
    kube = EndingBuild(f"{BUILT} 0", f"{BUILT} 0", seen_ending=False)
    written = io.StringIO()
    supervisor = Supervisor(
        cast(Kube, kube), StepLog("build", stream=written), "pod", "build", 60, 60
    )
    created = {"metadata": {"uid": "u1", "resourceVersion": "1"}}
    outcome = supervisor.wait(created, container_ends=True)
    assert outcome.succeeded
    supervisor.drain_logs()
    kube.seen_ending.set()
    kube.stream_ends.set()
    supervisor.close()
    assert (
        written.getvalue() == "k8scc build: pod phase Running\nk8scc build: | added 79 packages\n"
    )
    assert kube.pod_reads == 0


def test_a_failed_build_is_told_in_the_pods_own_words() -> None:
    kube = EndingBuild(f"{BUILT} 2", code=2)
    supervisor = Supervisor(
        cast(Kube, kube), StepLog("build", stream=io.StringIO()), "pod", "build", 60, 60
    )
    outcome = supervisor.wait(
        {"metadata": {"uid": "u1", "resourceVersion": "1"}}, container_ends=True
    )
    kube.stream_ends.set()
    supervisor.close()
    assert not outcome.succeeded
    assert failure(outcome.pod, "build") == "Error, exit code 2"


def test_a_chaincode_may_print_what_a_build_ends_with() -> None:
    """Only a build's container says how it ended: run passes any line on."""
    kube = EndingBuild(f"{BUILT} 0", ended_phase="Succeeded")
    kube.stream_ends.set()
    written = io.StringIO()
    supervisor = Supervisor(
        cast(Kube, kube), StepLog("run", stream=written), "pod", "build", 60, 60
    )
    outcome = supervisor.wait({"metadata": {"uid": "u1", "resourceVersion": "1"}})
    supervisor.close()
    assert outcome.succeeded
    assert f"k8scc run: | {BUILT} 0\n" in written.getvalue()
