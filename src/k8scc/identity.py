"""Who the peer is: its id (for names and labels) and, when it runs in a pod, that pod as the
owner of what k8scc creates, so Kubernetes removes those objects if the peer pod goes."""

from __future__ import annotations

import os
import socket

from k8scc.config import Config
from k8scc.kube import Kube
from k8scc.render import Identity


def peer_id(config: Config) -> str:
    return config.peer_id or os.environ.get("CORE_PEER_ID") or socket.gethostname()


def resolve(config: Config, kube: Kube) -> Identity:
    """The pod name is configured, or the hostname when running in-cluster (a pod's hostname
    is its name); a peer outside the cluster owns nothing."""
    pod_name = config.peer_pod_name
    if pod_name is None and config.kubeconfig is None:
        pod_name = socket.gethostname()
    owner = kube.peer_owner(pod_name) if config.owner_references and pod_name else None
    return Identity(peer_id=peer_id(config), owner=owner)
