"""Counting k8scc's requests to the API server from the server's own audit log (JSON lines,
level Metadata).

A request is counted once, by its auditID: at stage ResponseComplete, or at ResponseStarted
for long-running requests (watches, followed logs). Those reach ResponseComplete only when
they end, which for a launch's watch is after the measurement window, so counting their
start is what attributes each of them to the launch that opened it.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COUNTED_STAGES = frozenset({"ResponseStarted", "ResponseComplete"})


@dataclass(frozen=True)
class Request:
    audit_id: str
    verb: str
    resource: str  # resource[/subresource], or the path for non-resource requests
    received: float  # seconds since the epoch
    # When the server answered: the counted stage's time (a create is then stored).
    answered: float

    @property
    def kind(self) -> str:
        return f"{self.verb} {self.resource}"


def serviceaccount_user(namespace: str, account: str) -> str:
    return f"system:serviceaccount:{namespace}:{account}"


def parse_timestamp(stamp: str) -> float:
    # fromisoformat takes neither a `Z` suffix nor nanoseconds before Python 3.11.
    if stamp.endswith("Z"):
        stamp = stamp[:-1] + "+00:00"
    head, _, zone = stamp.partition("+")
    if "." in head:
        seconds, fraction = head.split(".")
        head = f"{seconds}.{fraction[:6]}"
    return datetime.datetime.fromisoformat(f"{head}+{zone}" if zone else head).timestamp()


def read_events(path: Path) -> list[dict[str, Any]]:
    """The log's events; a last line still being written is skipped."""
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def _resource(event: dict[str, Any]) -> str:
    ref = event.get("objectRef")
    if not ref:
        return str(event.get("requestURI", "")).split("?")[0]
    resource = str(ref.get("resource", ""))
    return f"{resource}/{ref['subresource']}" if ref.get("subresource") else resource


def requests_by(
    events: Iterable[dict[str, Any]], user: str, since: float, until: float
) -> list[Request]:
    """Requests `user` made that the server received in [since, until)."""
    seen: dict[str, Request] = {}
    for event in events:
        if event.get("stage") not in COUNTED_STAGES:
            continue
        if event.get("user", {}).get("username") != user:
            continue
        received = parse_timestamp(event["requestReceivedTimestamp"])
        if not since <= received < until or event["auditID"] in seen:
            continue
        answered = parse_timestamp(event.get("stageTimestamp") or event["requestReceivedTimestamp"])
        seen[event["auditID"]] = Request(
            event["auditID"], event["verb"], _resource(event), received, answered
        )
    return sorted(seen.values(), key=lambda r: r.received)


def first_answer(requests: Iterable[Request], kind: str) -> float | None:
    """When the server answered the first request of `kind` (`create pods`), if any."""
    return next((r.answered for r in requests if r.kind == kind), None)


def breakdown(requests: Iterable[Request]) -> dict[str, int]:
    """`verb resource` -> count, most frequent first."""
    counts = Counter(r.kind for r in requests)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def stream_seconds(
    events: Iterable[dict[str, Any]],
    user: str,
    since: float,
    until: float,
    kind: str,
    opening: bool = False,
) -> float:
    """How long `user`'s streams of `kind` (`get pods/exec`: a WebSocket upgrade is a GET)
    received in [since, until) were open, summed: from the server's upgrade answer
    (ResponseStarted), or with `opening` from the request's arrival (the API server reaching
    the kubelet and the container runtime first), to the stream's end (ResponseComplete). A
    stream still open at the window's end is not counted."""
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    for event in events:
        if event.get("user", {}).get("username") != user:
            continue
        if f"{event.get('verb')} {_resource(event)}" != kind:
            continue
        received = parse_timestamp(event["requestReceivedTimestamp"])
        if not since <= received < until:
            continue
        at = parse_timestamp(event.get("stageTimestamp") or event["requestReceivedTimestamp"])
        stage = event.get("stage")
        if stage == "ResponseStarted":
            started[event["auditID"]] = received if opening else at
        elif stage == "ResponseComplete":
            ended[event["auditID"]] = at
    return sum(ended[i] - started[i] for i in started if i in ended)
