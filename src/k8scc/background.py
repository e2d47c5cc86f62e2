"""Work done in a thread beside the step's own, for file copies that need not hold up the
requests made meanwhile (the copy waits in the kernel, not for Python)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
    """Runs `work` in a thread from now; `result()` waits for it and raises what it raised."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._error: BaseException | None = None
        self._work = work
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as error:  # handed to the thread that waits for it
            self._error = error

    def join(self) -> None:
        """Waits until the work has ended, whatever its outcome."""
        self._thread.join()

    def result(self) -> None:
        self.join()
        error, self._error = self._error, None
        if error is not None:
            raise error
