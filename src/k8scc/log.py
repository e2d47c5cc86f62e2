"""Logging to stderr, the builder's only channel into the peer's log: one event per line,
each naming the step, the chaincode and (once there is one) the pod. The peer stops reading
a line over 64 KiB, so every line is cut well below that."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import TextIO

MAX_LINE = 8192


@dataclass
class StepLog:
    step: str
    chaincode: str = ""
    pod: str = ""
    debug: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
