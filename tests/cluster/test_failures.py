"""Failures are reported in one line naming the pod and Kubernetes' reason, fast, and leave
nothing behind: no pods, Secrets or transfer directories, BUILD_OUTPUT_DIR empty."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod, Secret

from k8scc import names
from k8scc.transfer import MARKER, OUTPUT
from testbed.cluster import UNAVAILABLE_IMAGES, Testbed
from tests.cluster.test_steps import wait_clean
from tests.support.builder import (
    Builder,
    RunningStep,
    apply_rbac,
    make_builder,
    package_source,
    small_node_package,
)
from tests.support.fakepeer import FakePeer
from tests.support.pods import phase_in, shell_pod, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

CHAINCODE_ID = f"asset_1.0:{'cd' * 32}"


def error_lines(stderr: str) -> list[str]:
    """k8scc's own error lines, not the pods' output that it forwards."""
    return [
        line for line in stderr.splitlines() if re.match(r"k8scc \w+( \[[^]]*\])?: error: ", line)
    ]


def write_chaincode_json(directory: Path, content: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "chaincode.json").write_text(json.dumps(content))
    return directory


def launch(builder: Builder, output: Path, directory: Path, peer: FakePeer) -> RunningStep:
    """`run` as the peer starts it, with a fresh chaincode.json from the fake peer."""
    meta = write_chaincode_json(directory, peer.chaincode_json(CHAINCODE_ID))
    return builder.start("run", output, meta)


def exit_code(step: RunningStep, timeout: float) -> int | None:
    """The step's exit code, or None when it is still running after `timeout` seconds."""
    try:
        return step.process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def test_compile_error_fails_the_build_with_the_compiler_output_in_the_log(
    builder: Builder, admin: Client, namespace: str, tmp_path: Path
) -> None:
    source, metadata = package_source("golang", tmp_path)
    main = source / "src" / "main.go"
    main.write_text(main.read_text().replace("func main() {", "func main() { undefinedCall()"))
    output = tmp_path / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode != 0
    # The compiler's complaint streamed through the builder pod's log.
    assert re.search(r"\| .*undefined: undefinedCall", built.stderr), built.stderr
    [error] = error_lines(built.stderr)
    assert re.search(r"build failed in pod ccbuild-asset-1-0-[0-9a-f]+: Error, exit code 1", error)
    assert list(output.iterdir()) == []
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_unavailable_build_image_fails_fast_naming_the_reason(
    testbed: Testbed, admin: Client, namespace: str, volume_dir: Path, tmp_path: Path
) -> None:
    apply_rbac(testbed.control_plane, namespace)
    image = sorted(UNAVAILABLE_IMAGES)[0]
    builder = make_builder(
        testbed,
        namespace,
        volume_dir,
        tmp_path,
        {"platforms": {"golang": {"buildImage": image}}, "timeouts": {"stuck": "3s"}},
    )
    source, metadata = package_source("golang", tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    started = time.monotonic()
    built = builder.run("build", source, metadata, output)
    elapsed = time.monotonic() - started
    assert built.returncode != 0
    [error] = error_lines(built.stderr)
    assert "cannot start: ErrImagePull" in error or "cannot start: ImagePullBackOff" in error
    assert image in error
    assert elapsed < 20, elapsed
    assert list(output.iterdir()) == []
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_run_exits_nonzero_when_its_pod_is_deleted_by_someone_else(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        meta = write_chaincode_json(tmp_path / "run", peer.chaincode_json(CHAINCODE_ID))
        run = builder.start("run", golang_output, meta)
        try:
            assert peer.wait_registered(CHAINCODE_ID, 60), run.stderr
            [pod] = admin.list(Pod, namespace=namespace)
            assert pod.metadata is not None and pod.metadata.name
            admin.delete(Pod, pod.metadata.name, namespace=namespace)
            code = run.process.wait(30)
        finally:
            run.stop()
    assert code == 1
    [error] = error_lines(run.stderr)
    assert f"pod {pod.metadata.name}" in error
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_run_exits_nonzero_when_the_chaincode_fails(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    with FakePeer(tls=False, host=testbed.host_address) as peer:
        content = peer.chaincode_json(CHAINCODE_ID)
    # The peer is gone: the shim cannot connect and exits non-zero.
    meta = write_chaincode_json(tmp_path / "run", content)
    ran = builder.run("run", golang_output, meta, timeout=120)
    assert ran.returncode == 1
    [error] = error_lines(ran.stderr)
    assert re.search(r"chaincode pod cc-asset-1-0-[0-9a-f]+ failed: Error, exit code [1-9]", error)
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_relaunch_after_sigkill_replaces_the_stale_pod(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        first = launch(builder, golang_output, tmp_path / "a", peer)
        assert peer.wait_registered(CHAINCODE_ID, 60), first.stderr
        [stale] = admin.list(Pod, namespace=namespace)
        assert stale.metadata is not None
        first.stop(signal.SIGKILL)  # no cleanup: the pod and its Secret stay behind
        remaining = [p.metadata.name for p in admin.list(Pod, namespace=namespace) if p.metadata]
        assert remaining == [stale.metadata.name]
        second = launch(builder, golang_output, tmp_path / "b", peer)
        try:
            deadline = time.monotonic() + 60
            while len(peer.registrations()) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(peer.registrations()) == 2, second.stderr
            [fresh] = admin.list(Pod, namespace=namespace)
            assert fresh.metadata.name == stale.metadata.name  # type: ignore[union-attr]
            assert fresh.metadata.uid != stale.metadata.uid  # type: ignore[union-attr]
        finally:
            second.stop()
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_a_chaincode_slow_to_stop_leaves_no_files_when_run_ends(
    testbed: Testbed, admin: Client, namespace: str, volume_dir: Path, tmp_path: Path
) -> None:
    """A pod may stop for longer than `run` has after SIGTERM: here its grace period is 10 s
    and the node launch's shell, the container's first process, has no SIGTERM handler, so the
    signal does nothing (`true` takes the arguments npm appends). The pod mounts its launch
    directory read-only, so the directory must not wait for the pod to be gone."""
    apply_rbac(testbed.control_plane, namespace)
    builder = make_builder(
        testbed,
        namespace,
        volume_dir,
        tmp_path,
        {"chaincode": {"terminationGracePeriodSeconds": 10}},
    )
    source, metadata = small_node_package(tmp_path, scripts={"start": "echo up; sleep 600; true"})
    output = tmp_path / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode == 0, built.stderr
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        step = launch(builder, output, tmp_path / "run", peer)
        try:
            assert step.wait_for_line("| up", 60), step.stderr
        finally:
            stopping = time.monotonic()
            code = step.stop()
    assert time.monotonic() - stopping < 5, step.stderr
    assert code != 0
    assert list(volume_dir.iterdir()) == [], step.stderr
    [pod] = admin.list(Pod, namespace=namespace)  # still stopping
    assert pod.metadata is not None and pod.metadata.deletionTimestamp is not None
    assert wait_clean(admin, namespace, volume_dir, timeout=30) == []


def _marked(transfer: Path, name: str, peer_key: str, age: float) -> Path:
    """A transfer directory as a step of peer `peer_key` staged it `age` seconds ago."""
    directory = transfer / name
    (directory / OUTPUT).mkdir(parents=True)
    marker = directory / MARKER
    marker.write_text(peer_key)
    then = time.time() - age
    os.utime(marker, (then, then))
    return directory


def test_leftovers_of_killed_steps_are_collected_by_their_own_peer_only(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    """A build killed with SIGKILL leaves its pod and directory; a chaincode upgraded and never
    launched again leaves its launch directory. The next step of the same peer removes them
    once they are older than timeouts.leftovers, and leaves another peer's alone."""
    apply_rbac(testbed.control_plane, namespace)
    timeouts = {"build": "3s", "leftovers": "4s", "stuck": "5s", "start": "60s"}
    builder = make_builder(testbed, namespace, volume_dir, tmp_path, {"timeouts": timeouts})
    ours = names.peer_key("peer0.org1.example.com")
    source, metadata = small_node_package(tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    killed = builder.start("build", source, metadata, output)
    assert killed.wait_for_line("building node chaincode", 60), killed.stderr
    killed.stop(signal.SIGKILL)
    [pod] = admin.list(Pod, namespace=namespace)
    build_name = str(pod.metadata.name)  # type: ignore[union-attr]
    assert (volume_dir / build_name).is_dir()
    # Made after the killed build started, which would have collected them itself.
    upgraded = _marked(volume_dir, "cc-asset-0-9-0123456789-0a1b2c3d", ours, age=60)
    theirs = _marked(volume_dir, "cc-asset-1-0-9876543210-0a1b2c3d", "peer-other-0", age=60)
    time.sleep(5)  # older than timeouts.leftovers

    def collecting_launch(directory: Path) -> str:
        with FakePeer(tls=True, host=testbed.host_address) as peer:
            step = launch(builder, golang_output, directory, peer)
            try:
                assert peer.wait_registered(CHAINCODE_ID, 60), step.stderr
            finally:
                step.stop()
        return step.stderr

    first = collecting_launch(tmp_path / "a")
    assert f"deleting builder pod {build_name}, left by a killed build" in first
    assert f"removing transfer directory {upgraded.name}, left by a killed step" in first
    assert not upgraded.exists()
    # The builder pod still stopped while the first launch looked: its directory goes next.
    deadline = time.monotonic() + 30
    while any(p.metadata.name == build_name for p in admin.list(Pod, namespace=namespace)):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"builder pod {build_name} was not deleted"
        time.sleep(0.2)
    second = collecting_launch(tmp_path / "b")
    assert f"removing transfer directory {build_name}" in second
    assert [d.name for d in volume_dir.iterdir()] == [theirs.name]
    assert wait_clean(admin, namespace, None) == []


def test_cleanup_after_sigterm_ends_before_the_peers_sigkill_even_if_the_api_hangs(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    """The peer sends SIGKILL 5 s after SIGTERM. A request to an API server that accepts the
    connection and never answers may otherwise take 15 s, and `run` would die mid-cleanup."""
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        step = launch(builder, golang_output, tmp_path / "run", peer)
        assert peer.wait_registered(CHAINCODE_ID, 60), step.stderr
        with testbed.control_plane.apiserver_hung():
            stopping = time.monotonic()
            code = step.stop(timeout=20)
            took = time.monotonic() - stopping
    assert took < 5.0, step.stderr
    assert code != 0
    # What could not be undone is said, in one error line naming the pod.
    [error] = error_lines(step.stderr)
    assert "cannot delete pod cc-asset-1-0-" in error, error
    for pod in admin.list(Pod, namespace=namespace):
        admin.delete(Pod, pod.metadata.name, namespace=namespace, grace_period=0)  # type: ignore[arg-type, union-attr]


def test_pods_and_secret_are_owned_so_kubernetes_removes_them_with_the_peer_pod(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    apply_rbac(testbed.control_plane, namespace)
    admin.create(shell_pod("peer0", "while :; do sleep 1; done"), namespace=namespace)
    peer_pod = wait_for(admin, "peer0", namespace, phase_in("Running"))
    builder = make_builder(
        testbed, namespace, volume_dir, tmp_path, {"peer": {"id": "peer0", "podName": "peer0"}}
    )
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        run = launch(builder, golang_output, tmp_path / "run", peer)
        assert peer.wait_registered(CHAINCODE_ID, 60), run.stderr
        run.stop(signal.SIGKILL)
        pods = {p.metadata.name: p for p in admin.list(Pod, namespace=namespace) if p.metadata}
        [chaincode] = [pod for name, pod in pods.items() if name != "peer0"]
        assert chaincode.metadata is not None
        owners = [(o.kind, o.name, o.uid) for o in chaincode.metadata.ownerReferences or []]
        assert owners == [("Pod", "peer0", peer_pod["metadata"]["uid"])]
        # The launch's own Secret, the one its pod mounts.
        [secret] = admin.list(Secret, namespace=namespace)
        assert [v.secret.secretName for v in chaincode.spec.volumes if v.secret] == [  # type: ignore[union-attr]
            secret.metadata.name  # type: ignore[union-attr]
        ]
        secret_owners = {o.name for o in secret.metadata.ownerReferences or []}  # type: ignore[union-attr]
        assert secret_owners == {"peer0", chaincode.metadata.name}
        # The peer pod goes: the garbage collector removes the chaincode pod, then the Secret.
        admin.delete(Pod, "peer0", namespace=namespace, grace_period=0)
        assert wait_clean(admin, namespace, None, timeout=60) == []


def test_a_newer_launch_replaces_a_live_one_which_leaves_it_alone(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    """The peer starts a new `run` while an older one still runs (e.g. after its startup
    timeout): the new one takes the name over, and the old one's cleanup must not touch it."""
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        old = launch(builder, golang_output, tmp_path / "a", peer)
        assert peer.wait_registered(CHAINCODE_ID, 60), old.stderr
        new = launch(builder, golang_output, tmp_path / "b", peer)
        try:
            assert old.process.wait(60) == 1  # its pod was replaced under it
            deadline = time.monotonic() + 60
            while len(peer.registrations()) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(peer.registrations()) == 2, new.stderr
            time.sleep(2)  # give a wrong cleanup by the old run time to do damage
            [pod] = admin.list(Pod, namespace=namespace)
            assert pod.status is not None and pod.status.phase == "Running"
            assert len(list(admin.list(Secret, namespace=namespace))) == 1
            assert new.process.poll() is None
        finally:
            old.stop()
            new.stop()
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_launch_survives_an_api_server_restart(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    """While the API server is down `run` keeps waiting; afterwards its watch resumes, so a
    deletion it did not see happen is still noticed, and cleanup completes."""
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        run = launch(builder, golang_output, tmp_path / "run", peer)
        try:
            assert peer.wait_registered(CHAINCODE_ID, 60), run.stderr
            testbed.control_plane.restart_apiserver(down_seconds=3)
            assert run.process.poll() is None, run.stderr
            [pod] = [p for p in admin.list(Pod, namespace=namespace) if p.metadata]
            assert pod.metadata is not None and pod.metadata.name
            admin.delete(Pod, pod.metadata.name, namespace=namespace)
            assert run.process.wait(60) == 1
        finally:
            run.stop()
    [error] = error_lines(run.stderr)
    assert "was deleted" in error
    assert wait_clean(admin, namespace, builder.transfer) == []


RESTARTS: dict[str, Callable[[Testbed], None]] = {
    "API server": lambda bed: bed.control_plane.restart_apiserver(down_seconds=3),
    "kubelet": lambda bed: bed.real_node.restart_kubelet(),
    "containerd": lambda bed: bed.real_node.restart_containerd(),
}


@pytest.mark.parametrize("restarted", RESTARTS)
def test_build_survives_a_restart_of_the(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    restarted: str,
) -> None:
    # Still building while the restart happens and after.
    source, metadata = small_node_package(tmp_path, scripts={"preinstall": "sleep 15"})
    output = tmp_path / "bld"
    output.mkdir()
    build = builder.start("build", source, metadata, output)
    try:
        assert build.wait_for_line("pod phase Running", 120), build.stderr
        RESTARTS[restarted](testbed)
        code = exit_code(build, 240)
    finally:
        build.stop()
    assert code == 0, build.stderr
    assert (output / "output" / "package.json").is_file()
    assert wait_clean(admin, namespace, builder.transfer) == []
