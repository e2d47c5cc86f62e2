"""Who launches: the peer's id and, when the peer runs in a pod, that pod, named as owner of
what k8scc creates. Plain data, so rendering needs no Kubernetes client; identity.py finds it."""

from __future__ import annotations

from typing import Any

from k8scc.record import record

# The peer pod's uid, which its spec hands down (fieldRef metadata.uid) and core.yaml propagates.
POD_UID_ENV = "K8SCC_PEER_POD_UID"


@record
class Owner:
    """The peer's own Pod, named as owner so Kubernetes removes our objects with it."""

    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}


@record
class Identity:
    """Who launches: the peer id, the pod (or host) the peer runs in, and the pod that owns
    what we create when there is one."""

    peer_id: str
    owner: Owner | None = None
    instance: str = ""
