"""Following one container's log into the peer's log for as long as the container runs.

A log stream can end while the container still runs (a kubelet restart ends it cleanly), can go
half-open (no error, no bytes), or can fail for a while; none of that may silence the chaincode
or fail it. So the follower reconnects until the pod says the container has terminated, resumes
from the server's own timestamp of the last line it passed on, reads with a timeout, caps what
one line may hold, and reports a failing stream as a warning, never as the chaincode's failure.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from k8scc.http1 import Response
from k8scc.kube import Kube
from k8scc.log import MAX_LINE
from k8scc.record import field, mutable_record
from k8scc.transport import TRANSPORT_ERRORS, ApiError, describe, status_code

# What one line may hold as it is read, so an endless line costs no memory: it is cut, with a
# marker saying how much was left out, and still fits StepLog's line with its prefix.
MAX_LINE_BYTES = MAX_LINE // 2
# A stream with nothing to read for this long may be half-open: reconnect (nothing repeats,
# nothing is lost) instead of waiting on a dead socket.
READ_SECONDS = 300.0
MAX_BACKOFF_SECONDS = 30.0


@mutable_record
class LogFollower:
    kube: Kube
    name: str
    uid: str
    container: str
    on_line: Callable[[str], None]
    on_warning: Callable[[str], None]
    # Set when the pod is about to be deleted: then the stream's end is the container's.
    ending: threading.Event = field(default_factory=threading.Event)
    # Set when the container's last line has been passed on: the follower stops there.
    complete: threading.Event = field(default_factory=threading.Event)
    _last: str = ""  # the server's timestamp of the last line passed on, as a sortable key

    def follow(self, stop: threading.Event) -> None:
        backoff = 0.5
        warned = ""
        while not stop.is_set():
            try:
                self._stream(stop)
                backoff = 0.5
            except (ApiError, *TRANSPORT_ERRORS) as error:
                # 400: the container has not started yet, or is between restarts.
                if status_code(error) not in (400, 404) and describe(error) != warned:
                    warned = describe(error)
                    self.on_warning(f"log stream of pod {self.name} failed, retrying: {warned}")
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            if stop.is_set() or self.ending.is_set() or self.complete.is_set() or self._finished():
                return
            stop.wait(backoff)

    def _stream(self, stop: threading.Event) -> None:
        """One log request, read until it ends, goes quiet for too long, or `stop` is set."""
        query: dict[str, Any] = {
            "container": self.container,
            "follow": "true",
            "timestamps": "true",
        }
        resume_after = self._last
        if resume_after:
            query["sinceTime"] = resume_after[:19] + "Z"
        with self.kube.log_stream(self.name, query, READ_SECONDS) as response:
            while not stop.is_set():
                try:
                    line = _read_line(response)
                except TimeoutError:
                    return
                if line is None:
                    return
                stamp, _, text = line.partition(" ")
                key = _stamp_key(stamp)
                if resume_after and key <= resume_after:
                    continue
                resume_after = ""
                self._last = key
                self.on_line(text)
                if self.complete.is_set():
                    return

    def _finished(self) -> bool:
        """Whether the container will write no more: terminated, or its pod gone or replaced."""
        try:
            pod = self.kube.get_pod(self.name)
        except Exception:
            return False
        if pod is None or pod["metadata"].get("uid") != self.uid:
            return True
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == self.container:
                return "terminated" in (status.get("state") or {})
        return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def _read_line(response: Response) -> str | None:
    """The next line without its newline, at most MAX_LINE_BYTES of it; None at the end."""
    chunk = response.readline(MAX_LINE_BYTES + 1)
    if not chunk:
        return None
    if chunk.endswith(b"\n") or len(chunk) <= MAX_LINE_BYTES:
        return chunk.rstrip(b"\r\n").decode(errors="replace")
    left_out = len(chunk) - MAX_LINE_BYTES
    while rest := response.readline(MAX_LINE_BYTES):
        left_out += len(rest.rstrip(b"\r\n"))
        if rest.endswith(b"\n"):
            break
    kept = chunk[:MAX_LINE_BYTES].decode(errors="ignore")
    return f"{kept} [k8scc: line cut, {left_out} more bytes left out]"


def _stamp_key(stamp: str) -> str:
    """RFC 3339 timestamps with the fraction padded, so they sort as strings."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{seconds}.{fraction.ljust(9, '0')}"
