"""Who the peer is: its id (for names and labels) and, when it runs in a pod, that pod as the
owner of what k8scc creates, so Kubernetes removes those objects if the peer pod goes."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from k8scc.config import Config
from k8scc.kube import Kube
from k8scc.peer import POD_UID_ENV, Identity, Owner


def peer_id(config: Config) -> str:
    return config.peer_id or os.environ.get("CORE_PEER_ID") or socket.gethostname()


def owner_pod_name(config: Config) -> str | None:
    """The pod name is configured, or the hostname when running in-cluster (a pod's hostname
    is its name); a peer outside the cluster owns nothing."""
    if not config.owner_references:
        return None
    if config.peer_pod_name is None and config.kubeconfig is None:
        return socket.gethostname()
    return config.peer_pod_name


def resolve(config: Config, kube: Kube, environ: Mapping[str, str] = os.environ) -> Identity:
    """Owner references cannot cross namespaces (the garbage collector would take the owner
    for gone and delete what it owns): pods in a namespace other than the peer's have none."""
    pod_name = owner_pod_name(config) if kube.namespace == kube.peer_namespace else None
    uid = environ.get(POD_UID_ENV)
    if pod_name and uid:
        # The downward API's answer: no request on the way to the chaincode pod's create.
        owner: Owner | None = Owner(name=pod_name, uid=uid)
    else:
        pod = kube.get_pod(pod_name) if pod_name else None
        owner = Owner(name=pod["metadata"]["name"], uid=pod["metadata"]["uid"]) if pod else None
    return Identity(peer_id=peer_id(config), owner=owner, instance=instance(config))


def unowned(config: Config) -> Identity:
    """The peer as resolve() finds it, without looking up its pod as owner."""
    return Identity(peer_id=peer_id(config), instance=instance(config))


def instance(config: Config) -> str:
    """The peer process's pod name, or its host's: a peer restarted in the same pod or on the
    same host is the same peer, another one given the same id is not."""
    return config.peer_pod_name or socket.gethostname()
