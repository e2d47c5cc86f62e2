"""kube.py and transport.py against a scripted API server: watches that outlive their pod,
Retry-After, and creates whose answer was lost."""

from __future__ import annotations

import io
import socket
import threading
import time
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from k8scc.apitransfer import ApiTransfer
from k8scc.errors import K8sccError
from k8scc.kube import Incarnation
from k8scc.log import StepLog
from k8scc.steps.teardown import pod_then_directory
from k8scc.supervise import Supervisor
from tests.unit.scripted_api import (
    Events,
    Hangup,
    Reply,
    Request,
    ScriptedApi,
    Stall,
    Step,
    pods_path,
    scripted_api,
    status,
)

pytestmark = pytest.mark.unit

NAME = "ccbuild-x-0123456789"
LABELS = {"app.kubernetes.io/managed-by": "k8scc", "k8scc.hyperledger.org/step": "build"}
GONE = {"type": "ERROR", "object": status(410, "Expired", "too old resource version: 10 (40)")}


def pod(uid: str, version: str, phase: str = "Pending") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": NAME, "uid": uid, "resourceVersion": version, "labels": LABELS},
        "status": {"phase": phase},
    }


def manifest() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": NAME, "labels": LABELS, "annotations": {"example.com/a": "b"}},
        "spec": {"containers": [{"name": "build", "image": "busybox"}]},
    }


def stored(requests: list[Request]) -> dict[str, Any]:
    """What the API server stored for the first POST: the object as sent, plus its uid."""
    body: dict[str, Any] = requests[0].json()
    body["metadata"].update(uid="uid-stored", resourceVersion="7")
    return body


# --- watching ---------------------------------------------------------------------------------


def test_a_pod_replaced_while_the_watch_was_gone_is_reported_deleted(tmp_path: Path) -> None:
    """410 Gone, then the re-read finds a pod of our name with another uid: ours is gone, and
    supervising the newcomer would keep an old `run` alive for as long as the new pod runs."""
    script = [
        Step("GET", pods_path(), Events([GONE])),
        Step("GET", pods_path(NAME), Reply(200, pod("uid-new", "40"))),
    ]
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        supervisor = Supervisor(kube, StepLog("run", stream=io.StringIO()), NAME, "c", 60, 60)
        try:
            with pytest.raises(K8sccError, match=f"^pod {NAME} was deleted$"):
                supervisor.wait(pod("uid-ours", "10"))
        finally:
            supervisor.close()
        api.finished()


@pytest.mark.parametrize(
    "reread", [Reply(200, pod("uid-new", "40")), Reply(404, status(404, "NotFound", "gone"))]
)
def test_after_410_gone_a_missing_or_different_pod_ends_the_watch(
    tmp_path: Path, reread: Reply
) -> None:
    script = [Step("GET", pods_path(), Events([GONE])), Step("GET", pods_path(NAME), reread)]
    with scripted_api(script) as api:
        events = list(api.kube(tmp_path).watch_pod(NAME, "uid-ours", "10", threading.Event()))
        assert [kind for kind, _ in events] == ["DELETED"]
        assert events[0][1]["metadata"]["uid"] == "uid-ours"
        api.finished()


def test_after_410_gone_our_own_pod_is_re_read_and_watched_on(tmp_path: Path) -> None:
    script = [
        Step("GET", pods_path(), Events([GONE])),
        Step("GET", pods_path(NAME), Reply(200, pod("uid-ours", "40", "Running"))),
        Step("GET", pods_path(), Events([{"type": "MODIFIED", "object": pod("uid-ours", "41")}])),
    ]
    with scripted_api(script) as api:
        stop = threading.Event()
        watch = api.kube(tmp_path).watch_pod(NAME, "uid-ours", "10", stop)
        events = list(islice(watch, 2))
        stop.set()
        assert list(watch) == []
        assert [(kind, data["metadata"]["resourceVersion"]) for kind, data in events] == [
            ("MODIFIED", "40"),
            ("MODIFIED", "41"),
        ]
        assert api.requests[2].query["resourceVersion"] == "40"
        api.finished()


def test_an_event_for_another_pod_of_our_name_ends_the_watch(tmp_path: Path) -> None:
    script = [Step("GET", pods_path(), Events([{"type": "ADDED", "object": pod("uid-new", "40")}]))]
    with scripted_api(script) as api:
        events = list(api.kube(tmp_path).watch_pod(NAME, "uid-ours", "10", threading.Event()))
        assert [kind for kind, _ in events] == ["DELETED"]
        api.finished()


# --- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_holds_the_retry_back(tmp_path: Path, code: int) -> None:
    script = [
        Step(
            "GET", pods_path(NAME), Reply(code, status(code, "Busy", "busy"), {"Retry-After": "1"})
        ),
        Step("GET", pods_path(NAME), Reply(200, pod("uid-ours", "10"))),
    ]
    with scripted_api(script) as api:
        found = api.kube(tmp_path).get_pod(NAME)
        assert found is not None and found["metadata"]["uid"] == "uid-ours"
        first, second = api.requests
        assert second.at - first.at >= 0.95  # 1 s asked for, less the timers' slack
        api.finished()


def test_a_retry_after_beyond_the_retry_window_fails_at_once(tmp_path: Path) -> None:
    busy = Reply(429, status(429, "TooManyRequests", "slow down"), {"Retry-After": "3600"})
    with scripted_api([Step("GET", pods_path(NAME), busy)]) as api:
        kube = api.kube(tmp_path)
        kube.retry_seconds = 2.0
        with pytest.raises(K8sccError, match=f"^cannot read pod {NAME}: slow down$"):
            kube.get_pod(NAME)
        assert len(api.requests) == 1
        api.finished()


# --- creates whose answer was lost ------------------------------------------------------------

EXISTS = Reply(409, status(409, "AlreadyExists", f'pods "{NAME}" already exists'))


def test_a_lost_create_is_retried_and_the_pod_it_stored_adopted(tmp_path: Path) -> None:
    script = [
        Step("POST", pods_path(), Hangup()),
        Step("POST", pods_path(), EXISTS),
        Step("GET", pods_path(NAME), Reply(200, stored)),
    ]
    with scripted_api(script) as api:
        created = api.kube(tmp_path).create(manifest(), Incarnation("pods", NAME))
        assert created["metadata"]["uid"] == "uid-stored"
        first, second, _ = api.requests
        assert first.json() == second.json()  # the retry is the same create
        assert first.json()["metadata"]["labels"] == LABELS
        api.finished()


def test_a_foreign_pod_met_by_a_retried_create_is_refused(tmp_path: Path) -> None:
    foreign = pod("uid-foreign", "3")
    foreign["metadata"]["labels"] = {**LABELS, "k8scc.hyperledger.org/step": "run"}
    script = [
        Step("POST", pods_path(), Hangup()),
        Step("POST", pods_path(), EXISTS),
        Step("GET", pods_path(NAME), Reply(200, foreign)),
    ]
    with scripted_api(script) as api:
        with pytest.raises(K8sccError) as raised:
            api.kube(tmp_path).create(manifest(), Incarnation("pods", NAME))
        assert str(raised.value) == f"pod {NAME} exists already and was not created by this step"
        api.finished()


def test_an_earlier_incarnation_met_by_a_retried_create_is_replaced(tmp_path: Path) -> None:
    """A chaincode pod's name is the same for every launch: an earlier launch's pod carries our
    labels too, and is replaced, not adopted."""
    earlier = pod("uid-earlier", "3", "Running")
    script = [
        Step("POST", pods_path(), Hangup()),
        Step("POST", pods_path(), EXISTS),
        Step("GET", pods_path(NAME), Reply(200, earlier)),
        Step("GET", pods_path(NAME), Reply(200, earlier)),  # whose it is
        Step("DELETE", pods_path(NAME), Reply(200, earlier)),
        Step("GET", pods_path(NAME), Reply(404, status(404, "NotFound", "not found"))),
        Step("POST", pods_path(), Reply(201, lambda requests: stored(requests[-1:]))),
    ]
    with scripted_api(script) as api:
        created = api.kube(tmp_path).replace_pod(manifest(), Incarnation("pods", NAME), 10)
        assert created["metadata"]["uid"] == "uid-stored"
        api.finished()


# --- replacing and removing pods --------------------------------------------------------------


def terminating(uid: str, version: str) -> dict[str, Any]:
    body = pod(uid, version, "Running")
    body["metadata"]["deletionTimestamp"] = "2026-12-03T10:00:00Z"
    return body


def test_a_previous_pod_is_deleted_gracefully_and_its_name_reused_once_it_is_deleted(
    tmp_path: Path,
) -> None:
    """Until the API server deletes a gracefully deleted pod, its kubelet may still be running
    its container: a new launch of the name must not start beside it."""
    incarnation = Incarnation("pods", NAME)
    script = [
        Step("POST", pods_path(), EXISTS),
        Step("GET", pods_path(NAME), Reply(200, pod("uid-earlier", "3", "Running"))),
        Step("DELETE", pods_path(NAME), Reply(200, terminating("uid-earlier", "4"))),
        Step("GET", pods_path(NAME), Reply(200, terminating("uid-earlier", "4"))),
        Step(
            "GET",
            pods_path(),
            Events(
                [
                    {"type": "MODIFIED", "object": terminating("uid-earlier", "5")},
                    {"type": "DELETED", "object": terminating("uid-earlier", "6")},
                ]
            ),
        ),
        Step("POST", pods_path(), Reply(201, lambda requests: stored(requests[-1:]))),
    ]
    with scripted_api(script) as api:
        created = api.kube(tmp_path).replace_pod(manifest(), incarnation, 10)
        api.finished()
    assert created["metadata"]["uid"] == incarnation.uid == "uid-stored"
    delete, watch = api.requests[2], api.requests[4]
    assert delete.json() == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": "uid-earlier"},
    }
    assert watch.query["watch"] == "true"
    assert watch.query["resourceVersion"] == "4"
    assert int(watch.query["timeoutSeconds"]) <= 10
    # The create id is the incarnation's, sent with both creates.
    for create in (api.requests[0], api.requests[5]):
        annotations = create.json()["metadata"]["annotations"]
        assert annotations["k8scc.hyperledger.org/create-id"] == incarnation.create_id


def test_a_previous_pod_that_does_not_stop_fails_the_launch_before_any_create(
    tmp_path: Path,
) -> None:
    script = [
        Step("POST", pods_path(), EXISTS),
        Step("GET", pods_path(NAME), Reply(200, pod("uid-earlier", "3", "Running"))),
        Step("DELETE", pods_path(NAME), Reply(200, terminating("uid-earlier", "4"))),
        Step("GET", pods_path(NAME), Reply(200, terminating("uid-earlier", "4"))),
        Step("GET", pods_path(), Events([], hold=True)),
    ]
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        with pytest.raises(K8sccError) as raised:
            kube.replace_pod(manifest(), Incarnation("pods", NAME), 1)
        assert str(raised.value) == f"previous pod {NAME} did not stop within 1 s"
        api.closing.set()
        api.finished()
    assert [request.method for request in api.requests].count("POST") == 1


@pytest.mark.parametrize("ours", [True, False])
def test_a_pod_whose_create_answer_never_came_is_removed_only_if_it_has_our_create_id(
    tmp_path: Path, ours: bool
) -> None:
    """A step stopped while its create is under way knows no uid: the pod of its name is its
    own exactly when it carries the create id the step sent."""
    incarnation = Incarnation("pods", NAME, sent=True)
    found = pod("uid-found", "8", "Running")
    create_id = incarnation.create_id if ours else "another-launch"
    found["metadata"]["annotations"] = {"k8scc.hyperledger.org/create-id": create_id}
    script = [Step("GET", pods_path(NAME), Reply(200, found))]
    if ours:
        script += [
            Step("DELETE", pods_path(NAME), Reply(200, terminating("uid-found", "9"))),
            Step("GET", pods_path(NAME), Reply(404, status(404, "NotFound", "gone"))),
        ]
    with scripted_api(script) as api:
        assert api.kube(tmp_path).remove_pod(incarnation, 5) is True
        api.finished()
    if ours:
        assert api.requests[1].json()["preconditions"] == {"uid": "uid-found"}


def test_what_no_create_was_sent_for_is_not_looked_for(tmp_path: Path) -> None:
    """A step that fails before its create (bad input, an unreachable API server) has nothing
    to remove, and asks nothing."""
    with scripted_api([]) as api:
        kube = api.kube(tmp_path)
        assert kube.remove_pod(Incarnation("pods", NAME), 5) is True
        kube.remove_secret(Incarnation("secrets", NAME))
        api.finished()
    assert api.requests == []


def test_after_finish_by_a_hung_request_ends_by_the_deadline(tmp_path: Path) -> None:
    """Cleaning up after SIGTERM: the peer sends SIGKILL 5 s later, so no request may take the
    15 s a request otherwise may."""
    with scripted_api([Step("DELETE", pods_path(NAME), Stall())]) as api:
        kube = api.kube(tmp_path)
        began = time.monotonic()
        kube.finish_by(began + 1.0)
        with pytest.raises(K8sccError, match=f"^cannot delete pod {NAME}: "):
            kube.delete_pod(NAME, uid="uid-ours")
        took = time.monotonic() - began
        api.closing.set()
        api.finished()
    assert took < 3.0


# --- connections ------------------------------------------------------------------------------

LAUNCH = "ccrun-x-0123456789-abcd"


def secrets_path(name: str = "") -> str:
    return pods_path(name).replace("/pods", "/secrets")


def secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": LAUNCH, "labels": LABELS},
    }


def test_the_requests_of_a_launch_share_one_connection(tmp_path: Path) -> None:
    """One TLS handshake per step, not one per request."""
    script = [
        Step("POST", secrets_path(), Reply(201, lambda requests: stored(requests[-1:]))),
        Step("POST", pods_path(), Reply(201, lambda requests: stored(requests[-1:]))),
        Step("DELETE", secrets_path(LAUNCH), Reply(200, {})),
        Step("GET", pods_path(NAME), Reply(404, status(404, "NotFound", "not found"))),
    ]
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        kube.create(secret(), Incarnation("secrets", LAUNCH))
        kube.replace_pod(manifest(), Incarnation("pods", NAME), 10)
        kube.delete_secret(LAUNCH)
        assert kube.get_pod(NAME) is None  # an error answer keeps the connection too
        assert len(api.connections()) == 1
        api.finished()


def test_a_kept_connection_the_server_has_closed_is_not_used(tmp_path: Path) -> None:
    """Servers end idle connections: the next request goes on a new one at once, not after a
    failed attempt (no retry is allowed here)."""
    script = [
        Step("POST", secrets_path(), Reply(201, lambda r: stored(r[-1:]), hang_up_after=True)),
        Step("POST", pods_path(), Reply(201, lambda requests: stored(requests[-1:]))),
    ]
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        kube.retry_seconds = 0
        kube.create(secret(), Incarnation("secrets", LAUNCH))
        assert api.hung_up.wait(5)
        kube.create(manifest(), Incarnation("pods", NAME))
        assert [r.method for r in api.requests] == ["POST", "POST"]
        assert len(api.connections()) == 2
        api.finished()


def test_an_answer_that_closes_the_connection_is_not_kept(tmp_path: Path) -> None:
    closing = {"Connection": "close"}
    script = [
        Step("DELETE", secrets_path(LAUNCH), Reply(200, {}, headers=closing)),
        Step("DELETE", secrets_path(LAUNCH), Reply(200, {})),
    ]
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        kube.delete_secret(LAUNCH)
        kube.delete_secret(LAUNCH)
        assert len(api.requests) == 2
        assert len(api.connections()) == 2
        api.finished()


def test_a_create_lost_on_a_kept_connection_is_retried_once_and_adopted(tmp_path: Path) -> None:
    """The server stores the pod and drops the kept connection before answering: the retry,
    on a new connection, meets the pod and adopts it by its create id; nothing is deleted."""
    script = [
        Step("DELETE", secrets_path(LAUNCH), Reply(200, {})),
        Step("POST", pods_path(), Hangup()),
        Step("POST", pods_path(), EXISTS),
        Step("GET", pods_path(NAME), Reply(200, lambda requests: stored(requests[-3:]))),
    ]
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        kube.delete_secret(LAUNCH)
        created = kube.replace_pod(manifest(), Incarnation("pods", NAME), 10)
        assert created["metadata"]["uid"] == "uid-stored"
        assert [r.method for r in api.requests] == ["DELETE", "POST", "POST", "GET"]
        assert len(api.connections()) == 2
        api.finished()


def test_connections_send_small_writes_without_waiting(tmp_path: Path) -> None:
    """Nagle's algorithm would hold a small write back until the server's delayed ACK of the
    previous one, up to 40 ms each time."""
    script = [Step("DELETE", secrets_path(LAUNCH), Reply(200, {}))]
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        kube.delete_secret(LAUNCH)
        kept = kube._http._idle
        assert kept is not None and kept.sock is not None
        assert kept.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        api.finished()


def test_a_connection_opened_ahead_carries_the_first_requests(tmp_path: Path) -> None:
    """run opens its connection before it needs it: the handshakes are done by the time the
    first request goes, and that request does not open a second connection."""
    script = [
        Step("POST", secrets_path(), Reply(201, lambda requests: stored(requests[-1:]))),
        Step("DELETE", secrets_path(LAUNCH), Reply(200, {})),
    ]
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        kube.open_ahead()
        deadline = time.monotonic() + 5
        while api.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (api.accepted, api.requests) == (1, [])
        kube.create(secret(), Incarnation("secrets", LAUNCH))
        kube.delete_secret(LAUNCH)
        assert api.accepted == 1
        assert len(api.connections()) == 1
        api.finished()


def test_a_connection_ahead_that_fails_leaves_the_request_its_own_error(tmp_path: Path) -> None:
    api = ScriptedApi([])
    kube = api.kube(tmp_path)
    api.stop_unstarted()  # nothing listens on its port any more
    kube.retry_seconds = 0
    kube.open_ahead()
    with pytest.raises(K8sccError, match="refused"):
        kube.get_pod(NAME)


@pytest.mark.parametrize("finished", [False, True])
def test_a_build_pod_whose_output_is_taken_goes_with_no_grace_period(
    tmp_path: Path, finished: bool
) -> None:
    """Once the output is taken nothing in a build pod is left to stop, and in api mode its
    `hold` container still runs: deleted gracefully, the pod would stay until the kubelet has
    torn it down. Before that (a failed or stopped build) the builder gets its grace period."""
    incarnation = Incarnation("pods", NAME, uid="uid-1")
    script = [Step("DELETE", pods_path(NAME), Reply(200, terminating("uid-1", "9")))]
    script.append(Step("GET", pods_path(NAME), Reply(404, status(404, "NotFound", "gone"))))
    done = threading.Event()
    if finished:
        done.set()
    with scripted_api(script) as api:
        kube = api.kube(tmp_path)
        undo = pod_then_directory(
            kube, ApiTransfer(kube, 1024), incarnation, NAME, StepLog("build"), done
        )
        undo(time.monotonic() + 5)
        api.finished()
    options = api.requests[0].json()
    assert options.get("gracePeriodSeconds") == (0 if finished else None)
    assert options["preconditions"] == {"uid": "uid-1"}
