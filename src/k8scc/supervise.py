"""Following one pod from creation to its end: its output streamed live to the peer's log, its
status judged on every change, and a one-line failure as soon as it cannot start or finish,
well before the peer's own timeouts."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from k8scc.errors import K8sccError
from k8scc.kube import Kube
from k8scc.log import StepLog
from k8scc.podlog import LogFollower
from k8scc.podscripts import BUILT
from k8scc.record import record

# Waiting reasons no retry cures: the step fails once one has lasted timeouts.stuck.
STUCK_REASONS = frozenset(
    {
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)
# A pull can fail for a while (a registry's rate limit, a network blip) and then work; only
# an image the registry says is not there, or not ours to pull, is stuck.
PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff"})
# Pull failures that waiting does not mend. "no such host" is a registry name that does not
# exist (NXDOMAIN); a resolver that does not answer says "i/o timeout" instead.
MISSING_IMAGE = re.compile(
    r"not found|manifest unknown|name unknown|repository does not exist|access denied"
    r"|unauthorized|no such host",
    re.IGNORECASE,
)


# A build container's last line (podscripts.WAIT_THEN_BUILD), an event of its own here.
EXIT_LINE = re.compile(re.escape(BUILT) + r" ([0-9]+)")
EXITED = "EXITED"


@record
class Waiting:
    """Why a pod has not started: `stuck` when it will not start by itself."""

    reason: str
    message: str
    stuck: bool


@record
class Outcome:
    succeeded: bool
    pod: dict[str, Any]


def _container_status(pod: dict[str, Any], container: str) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return dict(status)
    return {}


def _init_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("status", {}).get("initContainerStatuses") or [])


def _terminated_text(terminated: dict[str, Any]) -> str:
    text = f"{terminated.get('reason', 'Error')}, exit code {terminated.get('exitCode')}"
    message = " ".join(str(terminated.get("message") or "").split())
    return f"{text}: {message}" if message else text


def waiting_state(pod: dict[str, Any], container: str, image_missing: bool) -> Waiting | None:
    """What the pod waits for, if anything. `image_missing`: a pull already failed for good,
    so the back-off that follows is stuck too."""
    status = pod.get("status", {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            # A cluster autoscaler may be adding the node it needs.
            return Waiting("Unschedulable", str(condition.get("message", "")), stuck=False)
    # Init containers run first: while one waits, the container waits for it.
    for status in [*_init_statuses(pod), _container_status(pod, container)]:
        waiting = status.get("state", {}).get("waiting") or {}
        reason, message = str(waiting.get("reason") or ""), str(waiting.get("message") or "")
        if reason in STUCK_REASONS:
            return Waiting(reason, message, stuck=True)
        if reason in PULL_REASONS:
            missing = image_missing or MISSING_IMAGE.search(message) is not None
            return Waiting(reason, message, stuck=missing)
    return None


def failure(pod: dict[str, Any], container: str) -> str:
    """Why a finished pod failed, in Kubernetes' own words."""
    status = pod.get("status", {})
    terminated = _container_status(pod, container).get("state", {}).get("terminated") or {}
    if status.get("reason"):
        text = f"{status['reason']}"
        if status.get("message"):
            text += f": {status['message']}"
        return text
    for init in _init_statuses(pod):
        init_end = init.get("state", {}).get("terminated") or {}
        if init_end and init_end.get("exitCode") != 0:
            return f"init container {init.get('name')}: {_terminated_text(init_end)}"
    if terminated:
        return _terminated_text(terminated)
    return f"phase {status.get('phase')}"


def _running(pod: dict[str, Any], container: str) -> bool:
    state = _container_status(pod, container).get("state", {})
    return "running" in state or "terminated" in state


def _started(pod: dict[str, Any], container: str) -> bool:
    """The container, init or not, runs (and has not yet ended)."""
    statuses = [*_init_statuses(pod), *(pod.get("status", {}).get("containerStatuses") or [])]
    return any(
        "running" in (status.get("state") or {})
        for status in statuses
        if status.get("name") == container
    )


def _ended(pod: dict[str, Any], container: str) -> bool:
    return "terminated" in _container_status(pod, container).get("state", {})


class Supervisor:
    """Watches pod `name` (created at `resource_version`) and streams its container's log."""

    def __init__(
        self,
        kube: Kube,
        log: StepLog,
        name: str,
        container: str,
        start_timeout: float,
        stuck_timeout: float,
    ) -> None:
        self.kube = kube
        self.log = log
        self.name = name
        self.container = container
        self.start_timeout = start_timeout
        self.stuck_timeout = stuck_timeout
        self.stop = threading.Event()
        # SimpleQueue, not Queue: SIGTERM's handler raises Terminated wherever the main thread
        # is, and inside Queue's condition wait (Python code) that left its lock unbalanced.
        self.events: queue.SimpleQueue[tuple[str, dict[str, Any]] | BaseException] = (
            queue.SimpleQueue()
        )
        self._log_thread: threading.Thread | None = None
        # Whether the watch still runs (it has started and not failed), and whether it has
        # seen the pod go.
        self._watching = False
        self._gone = False
        self._ending = threading.Event()
        # Whether the container's last log line says how its command ended (a build's does).
        self._says_exit = False
        self._exit_lines = 0
        self._complete = threading.Event()

    def _watch(self, uid: str, resource_version: str) -> None:
        try:
            for event in self.kube.watch_pod(self.name, uid, resource_version, self.stop):
                self.events.put(event)
        except BaseException as error:
            self.events.put(error)

    def _start_logs(self, uid: str) -> None:
        if self._log_thread is None:
            follower = LogFollower(
                self.kube,
                self.name,
                uid,
                self.container,
                self._line,
                self.log.info,
                self._ending,
                self._complete,
            )
            self._log_thread = threading.Thread(
                target=follower.follow, args=(self.stop,), daemon=True
            )
            self._log_thread.start()

    def _line(self, text: str) -> None:
        said = EXIT_LINE.fullmatch(text) if self._says_exit else None
        if said is None:
            self.log.output(text)
            return
        self._exit_lines += 1
        if self._exit_lines == 1:
            self.events.put((EXITED, {"exitCode": int(said.group(1))}))
        else:  # stdout's and stderr's: nothing is left to read
            self._complete.set()

    def wait(
        self,
        created_pod: dict[str, Any],
        on_start: tuple[str, Callable[[], None]] | None = None,
        container_ends: bool = False,
    ) -> Outcome:
        """Follows the pod as its create returned it. Returns when the pod has ended, or with
        `container_ends` when its container has (a pod that holds its output for collection
        runs on: its last lines may still be on their way, drain_logs() waits for them), which
        its last log line tells before the pod's status does (podscripts.WAIT_THEN_BUILD);
        raises K8sccError when it cannot start, is stuck, or disappears. `on_start` names a
        container and what to do, once, when it runs."""
        self._says_exit = container_ends
        metadata = created_pod["metadata"]
        threading.Thread(
            target=self._watch, args=(metadata["uid"], metadata["resourceVersion"]), daemon=True
        ).start()
        self._watching = True
        created = time.monotonic()
        stuck_since: float | None = None
        image_missing = False
        reported: Waiting | None = None
        pod: dict[str, Any] = {}
        phase = ""
        while True:
            item = self._next(0.5)
            if isinstance(item, BaseException):
                raise item
            if item is not None and item[0] == EXITED:
                if item[1]["exitCode"] == 0:
                    self._ending.set()
                    return Outcome(True, pod)
                # A failure is told in the pod's status, in Kubernetes' own words.
                item = None
            if item is not None:
                kind, pod = item
                # A deleted pod's container is stopped gracefully before the pod goes, so its
                # exit would otherwise read as the chaincode failing.
                if kind == "DELETED" or pod.get("metadata", {}).get("deletionTimestamp"):
                    raise K8sccError(f"pod {self.name} was deleted")
                if pod.get("status", {}).get("phase", "") != phase:
                    phase = pod["status"]["phase"]
                    self.log.info(f"pod phase {phase}")
                if on_start is not None and _started(pod, on_start[0]):
                    starting = on_start[1]
                    on_start = None
                    starting()
                if _running(pod, self.container):
                    self._start_logs(metadata["uid"])
                if phase in ("Succeeded", "Failed"):
                    self.drain_logs()
                    return Outcome(phase == "Succeeded", pod)
                if container_ends and _ended(pod, self.container):
                    # The kubelet ends the log stream up to a second after the container: the
                    # caller takes the output meanwhile. The stream's end is then final.
                    self._ending.set()
                    state = _container_status(pod, self.container)["state"]["terminated"]
                    return Outcome(state.get("exitCode") == 0, pod)
            now = time.monotonic()
            state = waiting_state(pod, self.container, image_missing)
            if state is not None and state != reported:
                self.log.info(f"pod cannot start yet: {state.reason}: {state.message}")
            reported = state
            if state is not None and state.stuck:
                image_missing = image_missing or state.reason in PULL_REASONS
                stuck_since = now if stuck_since is None else stuck_since
                if now - stuck_since >= self.stuck_timeout:
                    raise K8sccError(
                        f"pod {self.name} cannot start: {state.reason}: {state.message}"
                    )
            else:
                stuck_since = None
            if self._log_thread is None and now - created > self.start_timeout:
                seen = phase or "unknown"
                if state is not None:
                    seen += f", {state.reason}: {state.message}"
                within = f"{self.start_timeout:.0f} s"
                raise K8sccError(f"pod {self.name} did not start within {within} (phase {seen})")

    def _next(self, seconds: float) -> tuple[str, dict[str, Any]] | BaseException | None:
        """The watch's next event or the error that ended it, within `seconds`."""
        try:
            item = self.events.get(timeout=seconds)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self._watching = False
        elif item[0] == "DELETED":
            self._gone = True
        return item

    def expect_deletion(self) -> None:
        """The pod is about to be deleted: its log's end is its container's, to be taken as is
        and not checked with a request."""
        self._ending.set()

    def wait_deleted(self, deadline: float) -> bool | None:
        """Whether the pod is gone by the time.monotonic() `deadline`, from the events of the
        watch that follows it, so that a launch's end needs no watch of its own; None when
        this watch cannot tell (it never started, or it failed)."""
        while not self._gone and self._watching:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._next(left)
        return True if self._gone else None

    def drain_logs(self) -> None:
        """The log stream ends by itself after the container exits; give it a moment."""
        if self._log_thread is not None:
            self._log_thread.join(timeout=10)

    def close(self) -> None:
        self.stop.set()
