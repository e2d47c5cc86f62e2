"""Pod manifests and waits shared by cluster tests."""

from __future__ import annotations

import time
from typing import Any

from lightkube import Client
from lightkube.resources.core_v1 import Pod

from testbed.cluster import BUSYBOX_IMAGE
from testbed.objects import load

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def shell_pod(name: str, script: str, **spec: Any) -> Pod:
    """A single-container pod admitted under PodSecurity `restricted`, running `sh -c script`."""
    container: dict[str, Any] = {
        "name": "main",
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "securityContext": RESTRICTED_CONTAINER,
    }
    container.update(spec.pop("container", {}))
    body: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
        "containers": [container],
    }
    body.update(spec)
    return load(Pod, {"metadata": {"name": name}, "spec": body})


def wait_for(
    client: Client, name: str, namespace: str, predicate: Any, timeout: float = 60
) -> dict[str, Any]:
    """Polls the pod until `predicate(pod_dict)` holds; returns the pod as a dict."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = client.get(Pod, name, namespace=namespace).to_dict()
        if predicate(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"pod {namespace}/{name} never matched; last status {last.get('status')}")


def phase_in(*phases: str) -> Any:
    return lambda pod: pod.get("status", {}).get("phase") in phases


def terminated(pod: dict[str, Any], container: str = "main") -> dict[str, Any]:
    for status in pod["status"].get("containerStatuses") or []:
        if status["name"] == container:
            return dict(status["state"]["terminated"])
    raise AssertionError(f"no status for container {container}")
