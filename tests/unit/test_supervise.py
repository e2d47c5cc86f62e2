"""How a pod's status reads as a step's outcome, init containers included: a build cache's
preparer runs before the builder, so what stops it must be told as clearly as the builder's."""

from __future__ import annotations

from typing import Any

import pytest

from k8scc.supervise import failure, waiting_state

pytestmark = pytest.mark.unit


def pod(init: dict[str, Any] | None = None, build: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending"}
    if init is not None:
        status["initContainerStatuses"] = [{"name": "cache", "state": init}]
    if build is not None:
        status["containerStatuses"] = [{"name": "build", "state": build}]
    return {"status": status}


def test_an_init_container_whose_image_is_missing_is_stuck() -> None:
    missing = {"waiting": {"reason": "ErrImagePull", "message": "image x: not found"}}
    state = waiting_state(
        pod(init=missing, build={"waiting": {"reason": "PodInitializing"}}), "build", False
    )
    assert state is not None
    assert (state.reason, state.stuck) == ("ErrImagePull", True)


def test_a_running_init_container_is_not_waiting() -> None:
    assert waiting_state(pod(init={"running": {}}), "build", False) is None


def test_a_failed_init_container_is_the_reason_in_one_line() -> None:
    ended = {
        "terminated": {
            "reason": "Error",
            "exitCode": 1,
            "message": "mkdir: cannot create directory '/k8scc-cache/golang-500':\n"
            "Permission denied\n",
        }
    }
    text = failure(pod(init=ended, build={"waiting": {"reason": "PodInitializing"}}), "build")
    assert text == (
        "init container cache: Error, exit code 1: mkdir: cannot create directory "
        "'/k8scc-cache/golang-500': Permission denied"
    )


def test_a_succeeded_init_container_leaves_the_builders_reason() -> None:
    done = {"terminated": {"reason": "Completed", "exitCode": 0}}
    build = {"terminated": {"reason": "Error", "exitCode": 2}}
    assert failure(pod(init=done, build=build), "build") == "Error, exit code 2"


def test_the_pods_own_reason_comes_first() -> None:
    failed = pod(init={"running": {}})
    failed["status"].update(reason="DeadlineExceeded", message="Pod was active too long")
    assert failure(failed, "build") == "DeadlineExceeded: Pod was active too long"
