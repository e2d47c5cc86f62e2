"""The node agent's kubelet log endpoint, spoken to over HTTPS as the API server does."""

from __future__ import annotations

import http.client
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import trustme

from testbed.logserver import ContainerLog, LogServer, LogStore

pytestmark = pytest.mark.cluster

NAMESPACE = "shop"
POD = "build-abc"
CONTAINER = "build"
LOG_PATH = f"/containerLogs/{NAMESPACE}/{POD}/{CONTAINER}"
# Go's RFC3339Nano in UTC: no trailing zeros in the fraction, no fraction at all if it is zero.
TIMESTAMPED_LINE = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{0,8}[1-9]))?Z (.*)")


@dataclass(frozen=True)
class Tls:
    cert_file: Path
    key_file: Path
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    directory = tmp_path_factory.mktemp("logserver-tls")
    tls = Tls(directory / "tls.crt", directory / "tls.key", ssl.create_default_context())
    cert.cert_chain_pems[0].write_to_path(tls.cert_file)
    cert.private_key_pem.write_to_path(tls.key_file)
    ca.configure_trust(tls.client)
    return tls


@pytest.fixture
def store() -> LogStore:
    return LogStore()


@pytest.fixture
def server(store: LogStore, tls: Tls) -> Iterator[LogServer]:
    server = LogServer(store, tls.cert_file, tls.key_file)
    server.start()
    yield server
    server.stop()


class Client:
    def __init__(self, port: int, tls: ssl.SSLContext) -> None:
        self._port = port
        self._tls = tls
        self._connections: list[http.client.HTTPSConnection] = []

    def get(self, path: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self._port, context=self._tls, timeout=5
        )
        self._connections.append(connection)
        connection.request("GET", path)
        return connection.getresponse()

    def body(self, path: str) -> tuple[int, bytes]:
        response = self.get(path)
        return response.status, response.read()

    def close(self) -> None:
        for connection in self._connections:
            connection.close()


@pytest.fixture
def client(server: LogServer, tls: Tls) -> Iterator[Client]:
    client = Client(server.port, tls.client)
    yield client
    client.close()


def running(store: LogStore) -> ContainerLog:
    log = store.container(NAMESPACE, POD, CONTAINER)
    log.mark_started()
    return log


def unix_ns(timestamp: bytes, fraction: bytes | None) -> int:
    moment = datetime.strptime(timestamp.decode(), "%Y-%m-%dT%H:%M:%S")
    seconds = int(moment.replace(tzinfo=timezone.utc).timestamp())
    return seconds * 1_000_000_000 + int((fraction or b"0").decode().ljust(9, "0"))


def rfc3339nano(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


@pytest.mark.timeout(20)
def test_follow_sends_each_line_as_it_is_written_and_ends_after_exit(
    store: LogStore, client: Client
) -> None:
    log = running(store)
    log.append("stdout", b"fetching modules")
    response = client.get(LOG_PATH + "?follow=true")
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Type") == "text/plain"
    assert response.readline() == b"fetching modules\n"

    # Each line must be readable before the next one exists: nothing is held back.
    for number, stream in enumerate(["stderr", "stdout", "stderr"]):
        line = f"step {number} on {stream}".encode()
        log.append(stream, line)
        assert response.readline() == line + b"\n"

    log.mark_exited()
    assert response.read() == b""
    assert response.isclosed()


@pytest.mark.timeout(20)
def test_follow_of_an_exited_container_sends_its_log_and_ends(
    store: LogStore, client: Client
) -> None:
    log = running(store)
    log.append("stdout", b"built")
    log.mark_exited()
    assert client.body(LOG_PATH + "?follow=true") == (200, b"built\n")


@pytest.mark.timeout(20)
def test_without_follow_the_lines_so_far_come_back_in_arrival_order(
    store: LogStore, client: Client
) -> None:
    log = running(store)
    log.append("stdout", b"one\n")
    log.append("stderr", b"two")
    log.append("stdout", b"three\nfour")
    log.append("stderr", b"")

    # The container still runs, yet the answer ends with what exists.
    assert client.body(LOG_PATH) == (200, b"one\ntwo\nthree\nfour\n\n")
    assert client.body(LOG_PATH + "?follow=false") == (200, b"one\ntwo\nthree\nfour\n\n")
    # Bytes holding two lines were kept as two lines.
    assert client.body(LOG_PATH + "?tailLines=3") == (200, b"three\nfour\n\n")


@pytest.mark.timeout(20)
def test_tail_lines_keeps_the_last_lines(store: LogStore, client: Client) -> None:
    log = running(store)
    for number in range(5):
        log.append("stdout", f"line {number}".encode())

    assert client.body(LOG_PATH + "?tailLines=2") == (200, b"line 3\nline 4\n")
    assert client.body(LOG_PATH + "?tailLines=0") == (200, b"")
    assert client.body(LOG_PATH + "?tailLines=9") == (
        200,
        b"".join(f"line {number}\n".encode() for number in range(5)),
    )


@pytest.mark.timeout(20)
def test_tail_lines_then_follow(store: LogStore, client: Client) -> None:
    log = running(store)
    for number in range(3):
        log.append("stdout", f"old {number}".encode())
    response = client.get(LOG_PATH + "?follow=true&tailLines=1")
    assert response.readline() == b"old 2\n"
    log.append("stdout", b"new")
    assert response.readline() == b"new\n"
    log.mark_exited()
    assert response.read() == b""


@pytest.mark.timeout(20)
def test_limit_bytes_cuts_the_whole_answer(store: LogStore, client: Client) -> None:
    log = running(store)
    log.append("stdout", b"alpha")
    log.append("stderr", b"beta")

    assert client.body(LOG_PATH + "?limitBytes=8") == (200, b"alpha\nbe")
    assert client.body(LOG_PATH + "?limitBytes=100") == (200, b"alpha\nbeta\n")


@pytest.mark.timeout(20)
def test_limit_bytes_ends_a_follow_stream_of_a_running_container(
    store: LogStore, client: Client
) -> None:
    log = running(store)
    log.append("stdout", b"alpha")
    response = client.get(LOG_PATH + "?follow=true&limitBytes=9")
    assert response.readline() == b"alpha\n"
    log.append("stdout", b"beta")
    assert response.read() == b"bet"


@pytest.mark.timeout(20)
def test_timestamps_prefix_each_line_with_the_time_it_was_written(
    store: LogStore, client: Client
) -> None:
    log = running(store)
    before = time.time_ns()
    log.append("stdout", b"hello world")
    log.append("stderr", b"oops")
    after = time.time_ns()

    status, body = client.body(LOG_PATH + "?timestamps=true")
    assert status == 200
    lines = body.split(b"\n")
    assert lines.pop() == b""
    stamped = [TIMESTAMPED_LINE.fullmatch(line) for line in lines]
    assert all(stamped), body
    assert [match[3] for match in stamped if match] == [b"hello world", b"oops"]
    times = [unix_ns(match[1], match[2]) for match in stamped if match]
    assert before <= times[0] <= times[1] <= after


@pytest.mark.timeout(20)
def test_timestamps_are_written_as_go_writes_rfc3339nano(
    store: LogStore, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = running(store)
    ticks = iter([1_700_000_000_000_000_000, 1_700_000_000_000_000_007, 1_700_000_000_120_000_000])
    with monkeypatch.context() as clock:
        clock.setattr(time, "time_ns", lambda: next(ticks))
        for _ in range(3):
            log.append("stdout", b"tick")

    assert client.body(LOG_PATH + "?timestamps=1") == (
        200,
        b"2023-11-14T22:13:20Z tick\n"
        b"2023-11-14T22:13:20.000000007Z tick\n"
        b"2023-11-14T22:13:20.12Z tick\n",
    )


@pytest.mark.timeout(20)
def test_since_time_and_since_seconds_leave_out_older_lines(
    store: LogStore, client: Client
) -> None:
    log = running(store)
    log.append("stdout", b"old")
    time.sleep(1.1)
    boundary = time.time_ns()
    time.sleep(0.01)
    log.append("stdout", b"new")

    assert client.body(LOG_PATH + "?sinceTime=" + rfc3339nano(boundary)) == (200, b"new\n")
    assert client.body(LOG_PATH + "?sinceSeconds=1") == (200, b"new\n")
    assert client.body(LOG_PATH + "?sinceSeconds=60") == (200, b"old\nnew\n")


@pytest.mark.timeout(20)
def test_invalid_options_are_refused(store: LogStore, client: Client) -> None:
    running(store)
    assert client.body(LOG_PATH + "?tailLines=many") == (
        400,
        b"cannot decode query: tailLines='many' is not an integer",
    )
    assert client.body(LOG_PATH + "?tailLines=-1") == (
        422,
        b"tailLines must be greater than or equal to 0",
    )
    assert client.body(LOG_PATH + "?sinceSeconds=5&sinceTime=2030-01-01T00:00:00Z")[0] == 422


@pytest.mark.timeout(20)
def test_unknown_pod_or_container_is_not_found(store: LogStore, client: Client) -> None:
    running(store)
    assert client.body(f"/containerLogs/{NAMESPACE}/other/{CONTAINER}") == (
        404,
        b'pod "other" does not exist',
    )
    assert client.body(f"/containerLogs/{NAMESPACE}/{POD}/sidecar") == (
        404,
        b'container "sidecar" not found in pod "build-abc"',
    )
    assert client.body(f"/containerLogs/elsewhere/{POD}/{CONTAINER}")[0] == 404
    assert client.body("/pods")[0] == 404


@pytest.mark.timeout(20)
def test_a_container_not_started_yet_says_what_it_waits_for(
    store: LogStore, client: Client
) -> None:
    store.container(NAMESPACE, POD, CONTAINER)
    assert client.body(LOG_PATH) == (
        400,
        b'container "build" in pod "build-abc" is waiting to start: ContainerCreating',
    )

    store.set_waiting_reason(NAMESPACE, POD, CONTAINER, "PodInitializing")
    assert client.body(LOG_PATH + "?follow=true") == (
        400,
        b'container "build" in pod "build-abc" is waiting to start: PodInitializing',
    )

    # The kubelet's own words for image pull failures.
    store.set_waiting_reason(NAMESPACE, POD, CONTAINER, "ErrImagePull")
    assert client.body(LOG_PATH) == (
        400,
        b'container "build" in pod "build-abc" is waiting to start: image can\'t be pulled',
    )

    running(store)
    assert client.body(LOG_PATH) == (200, b"")


@pytest.mark.timeout(20)
def test_there_is_no_previous_container(store: LogStore, client: Client) -> None:
    running(store).append("stdout", b"current")
    assert client.body(LOG_PATH + "?previous=true") == (
        400,
        b'previous terminated container "build" in pod "build-abc" not found',
    )
    assert client.body(LOG_PATH + "?previous=false") == (200, b"current\n")


@pytest.mark.timeout(20)
def test_forgetting_a_pod_removes_its_logs_and_ends_its_followers(
    store: LogStore, client: Client
) -> None:
    running(store).append("stdout", b"last words")
    response = client.get(LOG_PATH + "?follow=true")
    assert response.readline() == b"last words\n"

    store.forget_pod(NAMESPACE, POD)
    assert response.read() == b""
    assert client.body(LOG_PATH) == (404, b'pod "build-abc" does not exist')


@pytest.mark.timeout(20)
def test_a_follower_whose_client_hangs_up_is_let_go(store: LogStore, client: Client) -> None:
    running(store).append("stdout", b"to nobody")
    earlier = set(threading.enumerate())
    response = client.get(LOG_PATH + "?follow=true")
    assert response.readline() == b"to nobody\n"
    (follower,) = (
        thread
        for thread in set(threading.enumerate()) - earlier
        if "process_request" in thread.name
    )

    client.close()
    follower.join(timeout=2)
    assert not follower.is_alive()


@pytest.mark.timeout(20)
def test_stop_cuts_open_follow_streams_and_closes_the_listener(
    store: LogStore, server: LogServer, client: Client
) -> None:
    running(store).append("stdout", b"still running")
    response = client.get(LOG_PATH + "?follow=true")
    assert response.readline() == b"still running\n"

    started = time.monotonic()
    server.stop()
    # Cut, not ended: a final chunk would tell the client it has the whole log.
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    assert time.monotonic() - started < 1

    with pytest.raises(ConnectionRefusedError):
        client.get(LOG_PATH)
