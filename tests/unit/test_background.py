"""background.py: work in a thread whose error reaches the thread that waits for it."""

from __future__ import annotations

import threading

import pytest

from k8scc.background import Background
from k8scc.errors import K8sccError

pytestmark = pytest.mark.unit


def test_the_work_runs_before_anyone_waits_for_it() -> None:
    started, release = threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait(5)

    work_done = Background(work)
    assert started.wait(5)
    release.set()
    work_done.result()


def test_result_raises_what_the_work_raised_and_join_does_not() -> None:
    def work() -> None:
        raise K8sccError("no space left for the build output")

    failing = Background(work)
    failing.join()
    with pytest.raises(K8sccError, match="no space left"):
        failing.result()
