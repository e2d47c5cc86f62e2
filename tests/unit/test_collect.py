"""When a chaincode pod counts as ended, and for how long, for the collection of pods whose
`run` was killed."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from k8scc.collect import _ended_since

pytestmark = [pytest.mark.unit]

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def terminated(finished: str) -> dict[str, Any]:
    return {"state": {"terminated": {"finishedAt": finished}}}


def pod(phase: str, created: str = "2026-12-05T11:00:00Z", **status: Any) -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": created}, "status": {"phase": phase, **status}}


@pytest.mark.parametrize("phase", ["Pending", "Running", "Unknown", ""])
def test_a_pod_that_has_not_ended_has_not_ended_for_any_time(phase: str) -> None:
    """Only Succeeded and Failed pods are collected, however old."""
    old = pod(phase, containerStatuses=[terminated("2026-12-05T11:00:00Z")])
    assert _ended_since(old, NOW) == 0.0


def test_an_ended_pod_counts_from_its_last_container_end() -> None:
    """The latest end of its containers, init containers included, is when it ended."""
    ended = pod(
        "Succeeded",
        initContainerStatuses=[terminated("2026-12-05T11:10:00Z")],
        containerStatuses=[terminated("2026-12-05T11:50:00Z"), terminated("2026-12-05T11:40:00Z")],
    )
    assert _ended_since(ended, NOW) == 600.0


def test_a_pod_whose_init_container_failed_counts_from_that_failure() -> None:
    """Its main containers never ran, so they say nothing of its end."""
    failed = pod(
        "Failed",
        initContainerStatuses=[terminated("2026-12-05T11:58:00Z")],
        containerStatuses=[{"state": {"waiting": {"reason": "PodInitializing"}}}],
    )
    assert _ended_since(failed, NOW) == 120.0


def test_an_ended_pod_with_no_container_end_counts_from_its_creation() -> None:
    """A pod the kubelet rejected (no container ever ran) has only its creation time."""
    assert _ended_since(pod("Failed", created="2026-12-05T11:30:00Z"), NOW) == 1800.0
