"""Waiting for a server the test bed started to answer its health endpoint."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable


def wait_http_ok(
    name: str,
    url: str,
    timeout: float,
    check_alive: Callable[[], None],
    context: ssl.SSLContext | None = None,
) -> None:
    """Polls `url` until it answers 200; `check_alive` raises once the server has exited, so a
    crash is reported at once rather than at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        check_alive()
        try:
            # Only the http(s) URLs the test bed builds reach this.
            with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not ready at {url} after {timeout} s")
        time.sleep(0.1)
