"""Collecting what killed steps of this peer left behind, at the start of each build and
launch: builder pods older than timeouts.leftovers (a live build's pod is never that old),
chaincode pods ended that long ago (their `run` would have deleted them), and this
peer's transfer directories that old which no pod of the peer mounts (a chaincode that was
upgraded and never launched again, a build killed with SIGKILL). Objects of other peers are
never touched: pods are listed by this peer's label, directories carry its key."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from k8scc import names, render
from k8scc.errors import K8sccError
from k8scc.kube import Kube
from k8scc.log import StepLog

if TYPE_CHECKING:
    from k8scc.transfer import Transfer


def _since(timestamp: str, now: float) -> float:
    try:
        return now - datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _age(pod: dict[str, Any], now: float) -> float:
    return _since(pod["metadata"].get("creationTimestamp") or "", now)


def _ended_since(pod: dict[str, Any], now: float) -> float:
    """Seconds since the pod ended, as its last container's end says; 0 while it runs."""
    status = pod.get("status") or {}
    if status.get("phase") not in ("Succeeded", "Failed"):
        return 0.0
    # A pod whose init container failed has main containers that never ran.
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    ends = [
        str(((each.get("state") or {}).get("terminated") or {}).get("finishedAt") or "")
        for each in statuses
    ]
    return min((_since(end, now) for end in ends if end), default=_age(pod, now))


def _mounted(pod: dict[str, Any]) -> set[str]:
    """The transfer directories the pod's containers mount."""
    directories = set()
    for container in pod.get("spec", {}).get("containers") or []:
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") == render.TRANSFER_VOLUME and mount.get("subPath"):
                directories.add(str(mount["subPath"]).split("/", 1)[0])
    return directories


def collect(kube: Kube, transfer: Transfer, peer_id: str, older_than: float, log: StepLog) -> None:
    """Best effort: a failure is one line in the peer's log, and the step goes on."""
    try:
        pods = kube.list_pods(f"{names.LABEL_PEER}={names.peer_key(peer_id)}")
        now = time.time()
        in_use: set[str] = set()
        for pod in pods:
            in_use |= _mounted(pod)
            labels = pod["metadata"].get("labels") or {}
            age = _age(pod, now)
            name = pod["metadata"]["name"]
            if labels.get(names.LABEL_STEP) == "build" and age > older_than:
                log.info(f"deleting builder pod {name}, left by a killed build {age:.0f} s ago")
                # Its directory goes at a later collection, once the pod has stopped.
                kube.delete_pod(name, uid=pod["metadata"]["uid"])
            elif _ended_since(pod, now) > older_than:
                # A launch's `run` deletes its pod when the pod ends; one that is still there
                # lost its `run` (a peer killed, or gone, with no owner to collect it).
                log.info(f"deleting chaincode pod {name}, ended with no launch to follow it")
                kube.delete_pod(name, uid=pod["metadata"]["uid"])
        for directory in transfer.leftovers(older_than):
            if directory not in in_use:
                log.info(f"removing transfer directory {directory}, left by a killed step")
                transfer.remove(directory)
    except (K8sccError, OSError) as error:
        log.info(f"warning: leftovers of killed steps not collected: {error}")
