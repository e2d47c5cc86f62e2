"""Counting a ServiceAccount's API requests from audit events: each request once, watches
when they start, only inside the window and only that user's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.audit import (
    breakdown,
    first_answer,
    parse_timestamp,
    read_events,
    requests_by,
    serviceaccount_user,
    stream_seconds,
)

pytestmark = pytest.mark.unit

USER = serviceaccount_user("ns1", "k8scc")
T0 = parse_timestamp("2026-11-24T17:00:00.000000Z")


def event(
    audit_id: str,
    stage: str,
    verb: str,
    resource: str,
    second: float,
    user: str = USER,
    subresource: str | None = None,
    took: float = 0.0,
) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "namespace": "ns1", "apiVersion": "v1"}
    if subresource:
        ref["subresource"] = subresource

    def stamp(at: float) -> str:
        micros = round(at * 1_000_000)
        return f"2026-11-24T17:00:{micros // 1_000_000:02d}.{micros % 1_000_000:06d}Z"

    return {
        "kind": "Event",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": stage,
        "verb": verb,
        "user": {"username": user},
        "objectRef": ref,
        "requestReceivedTimestamp": stamp(second),
        "stageTimestamp": stamp(second + took),
    }


def test_timestamps_parse_with_z_and_any_fraction() -> None:
    assert parse_timestamp("2026-11-24T17:00:01.5Z") - T0 == pytest.approx(1.5)
    assert parse_timestamp("2026-11-24T17:00:01.123456789Z") - T0 == pytest.approx(1.123456)
    assert parse_timestamp("2026-11-24T17:00:02Z") - T0 == pytest.approx(2.0)


def test_each_request_counts_once_and_watches_count_when_they_start() -> None:
    events = [
        event("a", "RequestReceived", "create", "pods", 1),
        event("a", "ResponseComplete", "create", "pods", 1),
        event("b", "RequestReceived", "watch", "pods", 2),
        event("b", "ResponseStarted", "watch", "pods", 2),  # still open at the window's end
        event("c", "ResponseStarted", "get", "pods", 3, subresource="log"),
        event("c", "ResponseComplete", "get", "pods", 3, subresource="log"),
        event("d", "RequestReceived", "delete", "pods", 4),  # never answered: not counted
    ]
    found = requests_by(events, USER, T0, T0 + 10)
    assert [(r.audit_id, r.kind) for r in found] == [
        ("a", "create pods"),
        ("b", "watch pods"),
        ("c", "get pods/log"),
    ]


def test_only_the_users_requests_inside_the_window() -> None:
    events = [
        event("early", "ResponseComplete", "get", "pods", 0.5),
        event("in", "ResponseComplete", "get", "pods", 1.0),
        event("other", "ResponseComplete", "get", "pods", 2, user="system:node:n1"),
        event("late", "ResponseComplete", "get", "pods", 3.0),
    ]
    assert [r.audit_id for r in requests_by(events, USER, T0 + 1, T0 + 3)] == ["in"]


def test_breakdown_by_verb_and_resource_most_frequent_first() -> None:
    events = [
        event("1", "ResponseComplete", "delete", "secrets", 1),
        event("2", "ResponseComplete", "patch", "secrets", 1),
        event("3", "ResponseComplete", "delete", "secrets", 1),
        event("4", "ResponseComplete", "create", "pods", 1),
    ]
    counts = breakdown(requests_by(events, USER, T0, T0 + 10))
    assert list(counts.items()) == [("delete secrets", 2), ("create pods", 1), ("patch secrets", 1)]


def test_non_resource_requests_are_named_by_path() -> None:
    raw = event("v", "ResponseComplete", "get", "", 1)
    del raw["objectRef"]
    raw["requestURI"] = "/version?timeout=32s"
    assert breakdown(requests_by([raw], USER, T0, T0 + 10)) == {"get /version": 1}


def test_a_line_still_being_written_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    complete = json.dumps(event("a", "ResponseComplete", "get", "pods", 1))
    log.write_text(complete + "\n" + complete[:40])
    assert [e["auditID"] for e in read_events(log)] == ["a"]


def test_the_pod_is_accepted_when_the_server_answers_its_create() -> None:
    events = [
        event("s", "ResponseComplete", "create", "secrets", 1.0, took=0.004),
        event("p", "RequestReceived", "create", "pods", 1.01),
        event("p", "ResponseComplete", "create", "pods", 1.01, took=0.012),
        event("w", "ResponseStarted", "watch", "pods", 1.03, took=0.001),
    ]
    found = requests_by(events, USER, T0, T0 + 10)
    accepted = first_answer(found, "create pods")
    assert accepted is not None
    assert accepted - T0 == pytest.approx(1.022)
    assert first_answer(found, "delete pods") is None


def test_a_stream_lasts_from_its_upgrade_answer_to_its_end() -> None:
    # A WebSocket upgrade is a GET: the server audits exec streams as verb get.
    events = [
        event("a", "RequestReceived", "get", "pods", 2.0, subresource="exec"),
        event("a", "ResponseStarted", "get", "pods", 2.0, subresource="exec", took=0.01),
        event("a", "ResponseComplete", "get", "pods", 2.0, subresource="exec", took=0.51),
        event("b", "ResponseStarted", "get", "pods", 3.0, subresource="exec", took=0.02),
        event("b", "ResponseComplete", "get", "pods", 3.0, subresource="exec", took=0.27),
        event("open", "ResponseStarted", "get", "pods", 4.0, subresource="exec"),
        event("other", "ResponseStarted", "get", "pods", 2.0, subresource="exec", user="x"),
        event(
            "other", "ResponseComplete", "get", "pods", 2.0, subresource="exec", took=9, user="x"
        ),
        event("late", "ResponseStarted", "get", "pods", 11.0, subresource="exec"),
        event("late", "ResponseComplete", "get", "pods", 11.0, subresource="exec", took=5),
        event("p", "ResponseComplete", "create", "pods", 1.0, took=3),
    ]
    seconds = stream_seconds(events, USER, T0, T0 + 10, "get pods/exec")
    assert seconds == pytest.approx(0.5 + 0.25)
    # With its opening: from the request's arrival, before the server's upgrade answer.
    opened = stream_seconds(events, USER, T0, T0 + 10, "get pods/exec", opening=True)
    assert opened == pytest.approx(0.51 + 0.27)
