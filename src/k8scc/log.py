"""Logging to stderr, the builder's only channel into the peer's log: one event per line,
each naming the step, the chaincode and (once there is one) the pod. The peer stops reading
a line over 64 KiB, so every line is cut well below that."""

from __future__ import annotations

import sys
import threading

# detect imports this module and must not pay for importing typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

MAX_LINE = 8192


class StepLog:
    __slots__ = ("_lock", "chaincode", "debug", "pod", "step", "stream")

    def __init__(
        self,
        step: str,
        chaincode: str = "",
        pod: str = "",
        debug: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.step = step
        self.chaincode = chaincode
        self.pod = pod
        self.debug = debug
        # Looked up when the log is made: tests and callers may have replaced sys.stderr.
        self.stream: TextIO = sys.stderr if stream is None else stream
        self._lock = threading.Lock()

    def _emit(self, text: str) -> None:
        context = " ".join(
            part
            for part in (
                self.chaincode and f"chaincode={self.chaincode}",
                self.pod and f"pod={self.pod}",
            )
            if part
        )
        prefix = f"k8scc {self.step}" + (f" [{context}]" if context else "")
        for line in text.splitlines() or [""]:
            entry = f"{prefix}: {line}"
            if len(entry) > MAX_LINE:
                entry = entry[: MAX_LINE - 16] + " [line cut]"
            with self._lock:
                self.stream.write(entry + "\n")
                self.stream.flush()

    def info(self, message: str) -> None:
        self._emit(message)

    def output(self, line: str) -> None:
        """A line of the pod's own output, forwarded as it arrives."""
        self._emit(f"| {line}")

    def error(self, message: str) -> None:
        """Always exactly one line, whatever the message holds."""
        self._emit("error: " + " ".join(message.split()))
