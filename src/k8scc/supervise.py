"""Following one pod from creation to its end: its output streamed live to the peer's log, its
status judged on every change, and a one-line failure as soon as it cannot start or finish,
well before the peer's own timeouts."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from k8scc.errors import K8sccError
from k8scc.kube import Kube
from k8scc.log import StepLog
from k8scc.podlog import LogFollower

# Waiting reasons after which a pod will not start without someone changing something.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    pod: dict[str, Any]


def _container_status(pod: dict[str, Any], container: str) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return dict(status)
    return {}


def stuck_reason(pod: dict[str, Any], container: str) -> tuple[str, str] | None:
    """(reason, message) when the pod reports it cannot start, else None."""
    status = pod.get("status", {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return "Unschedulable", str(condition.get("message", ""))
    waiting = _container_status(pod, container).get("state", {}).get("waiting") or {}
    if waiting.get("reason") in STUCK_REASONS:
        return str(waiting["reason"]), str(waiting.get("message", ""))
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
    if terminated:
        reason = terminated.get("reason", "Error")
        text = f"{reason}, exit code {terminated.get('exitCode')}"
        if terminated.get("message"):
            text += f": {terminated['message']}"
        return text
    return f"phase {status.get('phase')}"


def _running(pod: dict[str, Any], container: str) -> bool:
    state = _container_status(pod, container).get("state", {})
    return "running" in state or "terminated" in state


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
        self.events: queue.Queue[tuple[str, dict[str, Any]] | BaseException] = queue.Queue()
        self._log_thread: threading.Thread | None = None

    def _watch(self, uid: str, resource_version: str) -> None:
        try:
            for event in self.kube.watch_pod(self.name, uid, resource_version, self.stop):
                self.events.put(event)
        except BaseException as error:
            self.events.put(error)

    def _start_logs(self, uid: str) -> None:
        if self._log_thread is None:
            follower = LogFollower(
                self.kube, self.name, uid, self.container, self.log.output, self.log.info
            )
            self._log_thread = threading.Thread(
                target=follower.follow, args=(self.stop,), daemon=True
            )
            self._log_thread.start()

    def wait(self, created_pod: dict[str, Any]) -> Outcome:
        """Follows the pod as its create returned it. Returns when the pod has ended; raises
        K8sccError when it cannot start, is stuck, or disappears."""
        metadata = created_pod["metadata"]
        threading.Thread(
            target=self._watch, args=(metadata["uid"], metadata["resourceVersion"]), daemon=True
        ).start()
        created = time.monotonic()
        stuck_since: float | None = None
        pod: dict[str, Any] = {}
        phase = ""
        while True:
            try:
                item = self.events.get(timeout=0.5)
            except queue.Empty:
                item = None
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                kind, pod = item
                if kind == "DELETED":
                    raise K8sccError(f"pod {self.name} was deleted")
                if pod.get("status", {}).get("phase", "") != phase:
                    phase = pod["status"]["phase"]
                    self.log.info(f"pod phase {phase}")
                if _running(pod, self.container):
                    self._start_logs(metadata["uid"])
                if phase in ("Succeeded", "Failed"):
                    self._drain_logs()
                    return Outcome(phase == "Succeeded", pod)
            now = time.monotonic()
            stuck = stuck_reason(pod, self.container)
            if stuck is None:
                stuck_since = None
            elif stuck_since is None:
                stuck_since = now
                self.log.info(f"pod cannot start yet: {stuck[0]}: {stuck[1]}")
            if (
                stuck is not None
                and stuck_since is not None
                and now - stuck_since >= self.stuck_timeout
            ):
                raise K8sccError(f"pod {self.name} cannot start: {stuck[0]}: {stuck[1]}")
            if self._log_thread is None and now - created > self.start_timeout:
                raise K8sccError(
                    f"pod {self.name} did not start within {self.start_timeout:.0f} s"
                    f" (phase {phase or 'unknown'})"
                )

    def _drain_logs(self) -> None:
        """The log stream ends by itself after the container exits; give it a moment."""
        if self._log_thread is not None:
            self._log_thread.join(timeout=10)

    def close(self) -> None:
        self.stop.set()
