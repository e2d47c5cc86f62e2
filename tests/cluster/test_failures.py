"""Failures are reported in one line naming the pod and Kubernetes' reason, fast, and leave
nothing behind: no pods, Secrets or transfer directories, BUILD_OUTPUT_DIR empty."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod, Secret

from testbed.cluster import UNAVAILABLE_IMAGES, Testbed
from tests.cluster.test_steps import wait_clean
from tests.support.builder import (
    Builder,
    RunningStep,
    apply_rbac,
    make_builder,
    package_source,
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
    builder: Builder, admin: Client, namespace: str, tmp_path: Path, golang_output: Path
) -> None:
    with FakePeer(tls=True) as peer:
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
    builder: Builder, admin: Client, namespace: str, tmp_path: Path, golang_output: Path
) -> None:
    with FakePeer(tls=False) as peer:
        content = peer.chaincode_json(CHAINCODE_ID)
    # The peer is gone: the shim cannot connect and exits non-zero.
    meta = write_chaincode_json(tmp_path / "run", content)
    ran = builder.run("run", golang_output, meta, timeout=120)
    assert ran.returncode == 1
    [error] = error_lines(ran.stderr)
    assert re.search(r"chaincode pod cc-asset-1-0-[0-9a-f]+ failed: Error, exit code [1-9]", error)
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_relaunch_after_sigkill_replaces_the_stale_pod(
    builder: Builder, admin: Client, namespace: str, tmp_path: Path, golang_output: Path
) -> None:
    with FakePeer(tls=True) as peer:
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
    with FakePeer(tls=True) as peer:
        run = launch(builder, golang_output, tmp_path / "run", peer)
        assert peer.wait_registered(CHAINCODE_ID, 60), run.stderr
        run.stop(signal.SIGKILL)
        pods = {p.metadata.name: p for p in admin.list(Pod, namespace=namespace) if p.metadata}
        [chaincode] = [pod for name, pod in pods.items() if name != "peer0"]
        assert chaincode.metadata is not None
        owners = [(o.kind, o.name, o.uid) for o in chaincode.metadata.ownerReferences or []]
        assert owners == [("Pod", "peer0", peer_pod["metadata"]["uid"])]
        secret = admin.get(Secret, chaincode.metadata.name, namespace=namespace)  # type: ignore[arg-type]
        secret_owners = {o.name for o in secret.metadata.ownerReferences or []}  # type: ignore[union-attr]
        assert secret_owners == {"peer0", chaincode.metadata.name}
        # The peer pod goes: the garbage collector removes the chaincode pod, then the Secret.
        admin.delete(Pod, "peer0", namespace=namespace, grace_period=0)
        assert wait_clean(admin, namespace, None, timeout=60) == []


def test_a_newer_launch_replaces_a_live_one_which_leaves_it_alone(
    builder: Builder, admin: Client, namespace: str, tmp_path: Path, golang_output: Path
) -> None:
    """The peer starts a new `run` while an older one still runs (e.g. after its startup
    timeout): the new one takes the name over, and the old one's cleanup must not touch it."""
    with FakePeer(tls=True) as peer:
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
    with FakePeer(tls=True) as peer:
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


def test_build_survives_an_api_server_restart(
    testbed: Testbed, builder: Builder, admin: Client, namespace: str, tmp_path: Path
) -> None:
    source, metadata = package_source("node", tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    build = builder.start("build", source, metadata, output)
    try:
        assert build.wait_for_line("pod phase Running", 120), build.stderr
        testbed.control_plane.restart_apiserver(down_seconds=3)
        code = exit_code(build, 240)
    finally:
        build.stop()
    assert code == 0, build.stderr
    assert (output / "output" / "package.json").is_file()
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_node_agent_restart_fails_the_launch_fast_and_a_relaunch_recovers(
    testbed: Testbed,
    builder: Builder,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    golang_output: Path,
) -> None:
    """The node's agent restarts and the chaincode's container is gone with it: `run` reports
    the pod as failed (the peer then relaunches), and the relaunch runs normally."""
    with FakePeer(tls=True) as peer:
        run = launch(builder, golang_output, tmp_path / "a", peer)
        try:
            assert peer.wait_registered(CHAINCODE_ID, 60), run.stderr
            testbed.restart_agent()
            assert run.process.wait(60) == 1
        finally:
            run.stop()
        [error] = error_lines(run.stderr)
        assert re.search(r"pod cc-asset-1-0-[0-9a-f]+ failed: ContainerStatusUnknown", error)
        assert wait_clean(admin, namespace, builder.transfer) == []
        again = launch(builder, golang_output, tmp_path / "b", peer)
        try:
            deadline = time.monotonic() + 60
            while len(peer.registrations()) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(peer.registrations()) == 2, again.stderr
        finally:
            again.stop()
    assert wait_clean(admin, namespace, builder.transfer) == []


def test_node_agent_restart_fails_the_build_leaving_nothing(
    testbed: Testbed, builder: Builder, admin: Client, namespace: str, tmp_path: Path
) -> None:
    source, metadata = package_source("node", tmp_path)
    # Slow enough that the agent restarts while the build command runs.
    package = source / "src" / "package.json"
    manifest = json.loads(package.read_text())
    manifest.setdefault("scripts", {})["preinstall"] = "sleep 30"
    package.write_text(json.dumps(manifest))
    output = tmp_path / "bld"
    output.mkdir()
    build = builder.start("build", source, metadata, output)
    try:
        assert build.wait_for_line("pod phase Running", 120), build.stderr
        testbed.restart_agent()
        code = build.process.wait(60)
    finally:
        build.stop()
    assert code != 0
    [error] = error_lines(build.stderr)
    assert re.search(
        r"build failed in pod ccbuild-asset-1-0-[0-9a-f]+: ContainerStatusUnknown", error
    )
    assert list(output.iterdir()) == []
    assert wait_clean(admin, namespace, builder.transfer) == []
