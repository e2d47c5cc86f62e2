"""What a step undoes when it ends. Each undo is registered before the object it undoes can
exist, so a step stopped at any moment still finds it; they run newest first, every one of
them even when an earlier one failed, and all of them by one deadline: after SIGTERM the peer
sends SIGKILL 5 s later."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from k8scc.errors import K8sccError
from k8scc.log import StepLog

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# Cleaning up after a failure or SIGTERM: the peer's SIGKILL follows SIGTERM after 5 s.
CLEANUP_SECONDS = 4.0


class Cleanup:
    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[float], None]]] = []

    def add(self, what: str, undo: Callable[[float], None]) -> None:
        """`undo(deadline)` must be done by the time.monotonic() `deadline`."""
        self._undo.append((what, undo))

    def run(self, seconds: float) -> list[str]:
        """Runs every undo within `seconds`; returns what could not be undone, one line each.
        A second SIGTERM is ignored: cleaning up is what the first one asked for."""
        deadline = time.monotonic() + seconds
        failures = []
        handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
        try:
            while self._undo:
                what, undo = self._undo.pop()
                try:
                    undo(deadline)
                except K8sccError as error:  # it names the object already
                    failures.append(str(error))
                except OSError as error:
                    failures.append(f"cannot {what}: {error}")
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return failures

    def close(self, seconds: float, log: StepLog, failing: bool) -> None:
        """Runs every undo. What could not be undone fails the step; when the step is failing
        already, each is a line of its own and the step's own error stays its one error."""
        problems = self.run(seconds)
        if failing:
            for problem in problems:
                log.info(problem)
        elif problems:
            raise K8sccError("; ".join(problems))
