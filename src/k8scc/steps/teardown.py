"""The undos of a step's pod and the transfer directory it mounts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from k8scc.cleanup import CLEANUP_SECONDS
from k8scc.kube import Incarnation, Kube
from k8scc.log import StepLog
from k8scc.steps import Terminated

if TYPE_CHECKING:
    from k8scc.transfer import Transfer


def cleanup_seconds(kube: Kube, error: BaseException | None) -> float:
    """How long a step ending with `error` may clean up. After SIGTERM the peer's SIGKILL is
    5 s away; a step ending otherwise may wait out an API server that is restarting, as every
    request does."""
    if isinstance(error, Terminated):
        return CLEANUP_SECONDS
    return CLEANUP_SECONDS + kube.retry_seconds


def pod_then_directory(
    kube: Kube,
    transfer: Transfer,
    pod: Incarnation,
    directory: str,
    log: StepLog,
    finished: threading.Event,
) -> Callable[[float], None]:
    """For a pod that writes to its directory (a build): deletes the pod and, once it is gone
    (its containers may write until they have stopped), the directory; otherwise leaves the
    directory for a later collection. Once `finished` is set (the build container has ended
    and its output is taken) the pod goes with no grace period: nothing in it is left to stop
    gracefully, and a pod that still runs (api mode's `hold`) would otherwise stay in the API
    until the kubelet has torn it down, most of a second the build would wait for."""

    def undo(deadline: float) -> None:
        grace = 0 if finished.is_set() else None
        if kube.remove_pod(pod, deadline - time.monotonic(), grace):
            transfer.remove(directory)
        elif not transfer.through_api:  # in api mode the files go with the pod
            log.info(
                f"transfer directory {directory} left for a later collection: the pod still runs"
            )

    return undo


def pod_and_directory(
    kube: Kube,
    transfer: Transfer,
    pod: Incarnation,
    directory: str,
    log: StepLog,
    gone: Callable[[str, float], bool],
) -> Callable[[float], None]:
    """For a pod that mounts its directory read-only (a launch): the directory goes as soon as
    the pod is told to stop, since nothing the pod does while it stops can change it, and its
    grace period may outlast the step. It is removed again once the pod is gone (`gone(uid,
    deadline)` says whether it went in time), in case the kubelet was still setting the pod up
    and made the directory anew."""

    def undo(deadline: float) -> None:
        uid = kube.stop_pod(pod)
        transfer.remove(directory)
        if uid is None:
            return
        if gone(uid, deadline):
            transfer.remove(directory)
        else:
            log.info(f"pod {pod.name} still stopping: it goes when its grace period ends")

    return undo
