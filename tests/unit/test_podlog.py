"""A supervised pod against a scripted API server. Its log: streams that end while the
container runs, go half-open, carry an endless line, or fail, must neither silence the
chaincode nor fail it, and nothing may be repeated when the follower reconnects. Its start:
states that pass by themselves are waited out, states that do not fail the step."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from k8scc import podlog
from k8scc.errors import K8sccError
from k8scc.log import StepLog
from k8scc.supervise import Outcome, Supervisor
from tests.unit.scripted_api import (
    Events,
    Reply,
    ScriptedApi,
    Step,
    Stream,
    pods_path,
    scripted_api,
    status,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

NAME = "cc-asset-1-0-0123456789"
UID = "uid-ours"
LOG = pods_path(NAME) + "/log"
FIRST = b"2026-12-03T05:00:01.000000001Z first\n"
SECOND = b"2026-12-03T05:00:02.5Z second\n"


def pod(state: dict[str, Any], phase: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": NAME, "uid": UID, "resourceVersion": version},
        "status": {"phase": phase, "containerStatuses": [{"name": "chaincode", "state": state}]},
    }


RUNNING = pod({"running": {}}, "Running", "11")
DONE = pod({"terminated": {"exitCode": 0}}, "Succeeded", "12")


def supervise(
    tmp_path: Path, log_steps: list[Step], until: str
) -> tuple[Outcome, list[str], ScriptedApi]:
    """Supervises a running pod whose log the script serves; once the peer's log shows
    `until`, the pod succeeds. Returns the outcome, the pod's lines as the peer's log shows
    them, and the server (for its requests)."""
    seen = threading.Event()
    events = Events(
        [{"type": "MODIFIED", "object": RUNNING}],
        gate=seen,
        after=[{"type": "MODIFIED", "object": DONE}],
        hold=True,
    )
    stream = io.StringIO()
    result: list[Outcome] = []
    with scripted_api([Step("GET", pods_path(), events), *log_steps]) as api:
        log = StepLog("run", stream=stream)
        supervisor = Supervisor(api.kube(tmp_path), log, NAME, "chaincode", 60, 60)
        waiter = threading.Thread(target=lambda: result.append(supervisor.wait(RUNNING)))
        waiter.start()
        deadline = time.monotonic() + 20
        while until not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.set()
        waiter.join(30)
        supervisor.close()
    assert result, stream.getvalue()
    lines = [line.partition("| ")[2] for line in stream.getvalue().splitlines() if "| " in line]
    return result[0], lines, api


def log_requests(api: ScriptedApi) -> list[dict[str, str]]:
    return [r.query for r in api.requests if r.path == LOG]


@pytest.mark.parametrize("half_open", [False, True], ids=["ends-cleanly", "goes-half-open"])
def test_a_stream_that_stops_while_the_container_runs_is_followed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, half_open: bool
) -> None:
    """A kubelet restart ends the stream cleanly; a dead link leaves it open and silent, and
    the read timeout gives it up. Either way the chaincode goes on printing: the second
    request resumes from the server's timestamp, and the line it repeats is not shown twice."""
    monkeypatch.setattr(podlog, "READ_SECONDS", 1.0)
    outcome, lines, api = supervise(
        tmp_path,
        [
            Step("GET", LOG, Stream([FIRST], hold=half_open)),
            Step("GET", pods_path(NAME), Reply(200, RUNNING)),
            Step("GET", LOG, Stream([FIRST, SECOND])),
            Step("GET", pods_path(NAME), Reply(200, DONE)),
        ],
        until="| second",
    )
    assert outcome.succeeded
    assert lines == ["first", "second"]
    assert [q.get("sinceTime") for q in log_requests(api)] == [None, "2026-12-03T05:00:01Z"]
    api.finished()


def test_an_endless_line_is_cut_with_a_marker(tmp_path: Path) -> None:
    """Read a bounded piece at a time (the peer drops a line over 64 KiB whole): the line
    keeps its first bytes and says how many were left out."""
    long = b"2026-12-03T05:00:01Z " + b"x" * 100_000 + b"\n"
    outcome, lines, api = supervise(
        tmp_path,
        [
            Step("GET", LOG, Stream([long, SECOND])),
            Step("GET", pods_path(NAME), Reply(200, DONE)),
        ],
        until="| second",
    )
    assert outcome.succeeded
    kept = podlog.MAX_LINE_BYTES - len("2026-12-03T05:00:01Z ")
    cut = f"{'x' * kept} [k8scc: line cut, {100_000 - kept} more bytes left out]"
    assert lines == [cut, "second"]
    api.finished()


def test_a_failing_log_stream_never_fails_the_chaincode(tmp_path: Path) -> None:
    forbidden = status(403, "Forbidden", 'pods "x" is forbidden: cannot get resource "pods/log"')
    outcome, lines, api = supervise(
        tmp_path,
        [
            Step("GET", LOG, Reply(403, forbidden)),
            Step("GET", pods_path(NAME), Reply(200, RUNNING)),
            Step("GET", LOG, Stream([FIRST])),
            Step("GET", pods_path(NAME), Reply(200, DONE)),
        ],
        until="| first",
    )
    assert outcome.succeeded
    assert lines == ["first"]
    api.finished()


# --- states a pod may wait in -------------------------------------------------------------


def waiting(reason: str, message: str) -> dict[str, Any]:
    return pod({"waiting": {"reason": reason, "message": message}}, "Pending", "10")


UNSCHEDULABLE = {
    **pod({}, "Pending", "10"),
    "status": {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient memory.",
            }
        ],
    },
}
RATE_LIMITED = waiting(
    "ErrImagePull",
    'failed to pull and unpack image "docker.io/hyperledger/fabric-ccenv:3.1": failed to copy:'
    " httpReadSeeker: failed open: unexpected status code 429 Too Many Requests",
)
MISSING = waiting(
    "ErrImagePull",
    'failed to pull and unpack image "example.com/cc:none": failed to resolve reference'
    ' "example.com/cc:none": example.com/cc:none: not found',
)
# containerd's words when the registry's name does not exist (NXDOMAIN), as on a real node.
NO_SUCH_REGISTRY = waiting(
    "ErrImagePull",
    'failed to pull and unpack image "registry.invalid/cc:1.0": failed to resolve image: failed'
    ' to do request: Head "https://registry.invalid/v2/cc/manifests/1.0": dial tcp: lookup'
    " registry.invalid on 10.255.255.53:53: no such host",
)
BACKING_OFF = waiting("ImagePullBackOff", 'Back-off pulling image "example.com/cc:none"')


def wait_through(tmp_path: Path, states: list[dict[str, Any]], stuck: float) -> tuple[str, Any]:
    """Supervises a pod that passes through `states` (each for several `stuck` timeouts) and
    then runs to success; returns the peer's log and the outcome or the error raised."""
    later = threading.Event()
    events = Events(
        [{"type": "MODIFIED", "object": state} for state in states],
        gate=later,
        after=[{"type": "MODIFIED", "object": RUNNING}, {"type": "MODIFIED", "object": DONE}],
        hold=True,
    )
    script = [
        Step("GET", pods_path(), events),
        Step("GET", LOG, Stream([])),
        Step("GET", pods_path(NAME), Reply(200, DONE)),
    ]
    stream = io.StringIO()
    result: list[Any] = []
    with scripted_api(script) as api:
        log = StepLog("build", stream=stream)
        supervisor = Supervisor(api.kube(tmp_path), log, NAME, "chaincode", 60, stuck)
        created = {**states[0], "metadata": {**states[0]["metadata"], "resourceVersion": "9"}}

        def supervise() -> None:
            try:
                result.append(supervisor.wait(created))
            except K8sccError as error:
                result.append(error)

        waiter = threading.Thread(target=supervise)
        waiter.start()
        waiter.join(stuck * 6)
        later.set()
        waiter.join(30)
        supervisor.close()
    assert result, stream.getvalue()
    return stream.getvalue(), result[0]


@pytest.mark.parametrize("state", [UNSCHEDULABLE, RATE_LIMITED], ids=["unschedulable", "429"])
def test_a_state_that_can_pass_is_reported_and_waited_out(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    """A cluster adding a node, a registry's rate limit: both pass, so only timeouts.start
    ends the wait, and the peer's log says what the pod waits for."""
    log, outcome = wait_through(tmp_path, [state], stuck=0.5)
    assert isinstance(outcome, Outcome) and outcome.succeeded, log
    assert "pod cannot start yet: " in log


@pytest.mark.parametrize(
    "missing", [MISSING, NO_SUCH_REGISTRY], ids=["no such image", "no such registry"]
)
def test_a_missing_image_fails_after_timeouts_stuck_also_while_backing_off(
    tmp_path: Path, missing: dict[str, Any]
) -> None:
    log, outcome = wait_through(tmp_path, [missing, BACKING_OFF], stuck=0.5)
    assert isinstance(outcome, K8sccError), log
    assert str(outcome).startswith(f"pod {NAME} cannot start: ImagePullBackOff: ")
    assert log.count("pod cannot start yet: ") == 2  # each state change is reported


def test_a_pod_being_deleted_by_someone_else_is_reported_as_deleted(tmp_path: Path) -> None:
    """A kubelet stops a deleted pod's container gracefully, so the container's exit (the
    chaincode's own code for SIGTERM) is seen before the pod goes: the deletion is the news."""
    deleting = pod({"running": {}}, "Running", "10")
    deleting["metadata"]["deletionTimestamp"] = "2026-12-03T05:00:09Z"
    log, outcome = wait_through(tmp_path, [deleting], stuck=0.5)
    assert isinstance(outcome, K8sccError), log
    assert str(outcome) == f"pod {NAME} was deleted"


def deleted_after_success(tmp_path: Path, watch_fails: bool) -> tuple[bool, ScriptedApi]:
    """A pod that succeeds, is deleted as a launch ends, and goes; says whether the launch saw
    it go, and returns the server (for the requests it was asked)."""
    deleted = threading.Event()
    deleting = pod({"terminated": {"exitCode": 0}}, "Succeeded", "13")
    deleting["metadata"]["deletionTimestamp"] = "2026-12-03T05:00:09Z"
    gone = pod({"terminated": {"exitCode": 0}}, "Succeeded", "14")
    going = [{"type": "MODIFIED", "object": deleting}, {"type": "DELETED", "object": gone}]
    if watch_fails:
        going = [{"type": "ERROR", "object": status(403, "Forbidden", "watch refused")}]

    def delete(_: list[Any]) -> dict[str, Any]:
        deleted.set()
        return deleting

    script = [
        Step("GET", pods_path(), Events([{"type": "MODIFIED", "object": DONE}], deleted, going)),
        Step("DELETE", pods_path(NAME), Reply(200, delete)),
    ]
    if watch_fails:  # then the launch watches for the deletion itself
        script += [
            Step("GET", pods_path(NAME), Reply(200, deleting)),
            Step("GET", pods_path(), Events([{"type": "DELETED", "object": gone}])),
        ]
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        supervisor = Supervisor(kube, StepLog("run", stream=io.StringIO()), NAME, "cc", 60, 60)
        assert supervisor.wait(RUNNING).succeeded
        kube.delete_pod(NAME, uid=UID)
        seen = supervisor.wait_deleted(time.monotonic() + 10)
        if seen is None:
            seen = kube.wait_pod_deleted(NAME, UID, 10)
        supervisor.close()
        api.finished()
    return seen, api


def test_a_launch_sees_its_pod_go_on_the_watch_that_follows_it(tmp_path: Path) -> None:
    seen, api = deleted_after_success(tmp_path, watch_fails=False)
    assert seen
    assert [r.method for r in api.requests] == ["GET", "DELETE"]  # no watch of its own


def test_a_launch_whose_watch_failed_watches_for_the_deletion_itself(tmp_path: Path) -> None:
    seen, api = deleted_after_success(tmp_path, watch_fails=True)
    assert seen
    assert [r.method for r in api.requests] == ["GET", "DELETE", "GET", "GET"]


def test_a_log_that_ends_as_its_pod_is_deleted_is_not_checked_with_a_request(
    tmp_path: Path,
) -> None:
    with scripted_api([Step("GET", LOG, Stream([FIRST, SECOND]))]) as api:
        lines: list[str] = []
        follower = podlog.LogFollower(
            api.kube(tmp_path), NAME, UID, "chaincode", lines.append, lines.append
        )
        follower.ending.set()
        follower.follow(threading.Event())
        api.finished()
    assert lines == ["first", "second"]
    assert [r.path for r in api.requests] == [LOG]
