"""Cleanup: every undo runs, newest first, even after one fails, and a second SIGTERM does not
cut it short."""

from __future__ import annotations

import os
import signal
from types import FrameType

import pytest

from k8scc.cleanup import Cleanup
from k8scc.errors import K8sccError

pytestmark = pytest.mark.unit


class Stopped(BaseException):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped


def test_every_undo_runs_newest_first_and_failures_are_reported() -> None:
    done: list[str] = []
    cleanup = Cleanup()

    def fail(deadline: float) -> None:
        done.append("secret")
        raise K8sccError("forbidden")

    cleanup.add("remove directory", lambda deadline: done.append("directory"))
    cleanup.add("delete secret", fail)
    cleanup.add("delete pod", lambda deadline: done.append("pod"))
    assert cleanup.run(4.0) == ["forbidden"]  # a K8sccError names its object itself
    assert done == ["pod", "secret", "directory"]
    assert cleanup.run(4.0) == []  # each undo runs once


def test_a_second_sigterm_does_not_cut_the_cleanup_short() -> None:
    done: list[str] = []
    cleanup = Cleanup()
    cleanup.add("delete pod", lambda deadline: done.append("pod"))
    cleanup.add("signal", lambda deadline: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        assert cleanup.run(4.0) == []
        assert done == ["pod"]
        assert signal.getsignal(signal.SIGTERM) is _stop  # restored afterwards
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_each_undo_is_given_the_one_deadline() -> None:
    deadlines: list[float] = []
    cleanup = Cleanup()
    cleanup.add("a", deadlines.append)
    cleanup.add("b", deadlines.append)
    cleanup.run(4.0)
    assert len(deadlines) == 2 and deadlines[0] == deadlines[1]
