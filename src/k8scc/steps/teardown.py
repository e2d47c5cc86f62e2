"""The undo build and run share: a pod, then the transfer directory it mounts."""

from __future__ import annotations

import time
from collections.abc import Callable

from k8scc.kube import Incarnation, Kube
from k8scc.log import StepLog
from k8scc.transfer import VolumeTransfer


def pod_then_directory(
    kube: Kube, transfer: VolumeTransfer, pod: Incarnation, directory: str, log: StepLog
) -> Callable[[float], None]:
    """Deletes the pod and, once it is gone (its containers may write or run until they have
    stopped), its directory; otherwise leaves the directory for a later collection."""

    def undo(deadline: float) -> None:
        if kube.remove_pod(pod, deadline - time.monotonic()):
            transfer.remove(directory)
        else:
            log.info(
                f"transfer directory {directory} left for a later collection: the pod still runs"
            )

    return undo
