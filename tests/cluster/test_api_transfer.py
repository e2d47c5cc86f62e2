"""The transfer mode with no volume (transfer.mode: api) on the real node: files go into
builder and chaincode pods and the build output comes back through exec streams, with no
PersistentVolumeClaim in the namespace, and nothing is left behind."""

from __future__ import annotations

import contextlib
import json
import os
import platform as host_platform
import re
import shutil
import signal
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import PersistentVolumeClaim, Pod, Secret

from k8scc.buildinfo import ARCHITECTURES
from k8scc.render import ARCH_FILE
from k8scc.transfer import OUTPUT, OUTPUT_ARCHIVE
from testbed.cluster import BUILD_CACHE_CLAIM, Testbed
from testbed.k8scc_setup import rbac_documents
from tests.cluster.test_bad_input import ERROR_LINE, Scene, node_package
from tests.cluster.test_steps import BUILT_FILE, launch_and_stop, wait_clean
from tests.support.builder import (
    Builder,
    apply_rbac,
    make_builder,
    package_source,
    small_node_package,
)
from tests.support.fakepeer import FakePeer
from tests.support.pods import phase_in, shell_pod, wait_for

pytestmark = [pytest.mark.cluster]


def api_builder(
    testbed: Testbed, admin: Client, namespace: str, workdir: Path, **extra: Any
) -> Builder:
    """k8scc in api mode with no claim at all in its namespace (not even the test bed's
    build cache), so that any pod mounting one could not start."""
    apply_rbac(testbed.control_plane, namespace)
    empty = workdir / "no-volume"
    empty.mkdir()
    settings = {"transfer": {"mode": "api"}, "buildCache": None, **extra}
    builder = make_builder(testbed, namespace, empty, workdir, extra=settings)
    admin.delete(PersistentVolumeClaim, BUILD_CACHE_CLAIM, namespace=namespace)
    return builder


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "platform", ["golang", "node", pytest.param("java", marks=pytest.mark.podsecurity("baseline"))]
)
def test_build_and_run_through_the_api_with_no_volume(
    testbed: Testbed, admin: Client, namespace: str, tmp_path: Path, platform: str
) -> None:
    builder = api_builder(testbed, admin, namespace, tmp_path)
    source, metadata = package_source(platform, tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    started = time.monotonic()
    built = builder.run("build", source, metadata, output)
    print(f"{platform} build through the API: {time.monotonic() - started:.1f} s")
    assert built.returncode == 0, built.stderr
    # One archive, as a launch sends it, in place of the tree.
    assert not (output / OUTPUT).exists()
    with tarfile.open(output / OUTPUT_ARCHIVE) as kept:
        names = kept.getnames()
    assert BUILT_FILE[platform] in names
    assert ARCH_FILE not in names
    info = json.loads((output / "k8scc-build.json").read_text())
    assert info["architecture"] == ARCHITECTURES[host_platform.machine()]
    assert list(admin.list(PersistentVolumeClaim, namespace=namespace)) == []
    assert wait_clean(admin, namespace, None) == []
    launch_and_stop(builder, output, tmp_path, platform, True, testbed.host_address)
    assert wait_clean(admin, namespace, None) == []
    assert list(builder.transfer.iterdir()) == []


def split_namespaces(testbed: Testbed, peer_namespace: str) -> str:
    """The recommended setup: the peer's account in its own namespace, with no permission
    there at all, and k8scc's Role in a chaincode namespace bound to that account."""
    chaincode_namespace = f"{peer_namespace[:50]}-cc"
    plane = testbed.control_plane
    plane.create_namespace(chaincode_namespace)
    account, role, binding = rbac_documents()
    plane.create_objects(peer_namespace, [account])
    subject = {"kind": "ServiceAccount", "name": "k8scc", "namespace": peer_namespace}
    plane.create_objects(chaincode_namespace, [role, {**binding, "subjects": [subject]}])
    return chaincode_namespace


def names_of(admin: Client, kind: Any, namespace: str) -> list[str]:
    return sorted(str(o.metadata.name) for o in admin.list(kind, namespace=namespace))


@pytest.mark.timeout(600)
def test_pods_run_in_a_chaincode_namespace_apart_from_the_peers(
    testbed: Testbed, admin: Client, namespace: str, tmp_path: Path, golang_output: Path
) -> None:
    """Builder and chaincode pods, and the launch's Secret, live in the chaincode namespace
    only; the peer's namespace gets nothing and grants nothing; no owner reference points
    across (the garbage collector would take the peer for gone); a chaincode pod whose `run`
    was killed is collected once it has ended."""
    chaincode_namespace = split_namespaces(testbed, namespace)
    admin.create(shell_pod("peer0", "while :; do sleep 1; done"), namespace=namespace)
    wait_for(admin, "peer0", namespace, phase_in("Running"))
    accounts = testbed.control_plane.write_incluster_dir(namespace, "k8scc", tmp_path / "sa")
    empty = tmp_path / "no-volume"
    empty.mkdir()
    builder = make_builder(
        testbed,
        namespace,
        empty,
        tmp_path,
        {
            "kubeconfig": None,
            "serviceAccountDir": str(accounts),
            "kubernetesServer": testbed.control_plane.server,
            "namespace": chaincode_namespace,
            "peer": {"id": "peer0", "podName": "peer0"},
            "transfer": {"mode": "api"},
            "buildCache": None,
            "timeouts": {"stuck": "5s", "start": "60s", "build": "20s", "leftovers": "21s"},
        },
    )
    source, metadata = small_node_package(tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode == 0, built.stderr

    with FakePeer(tls=True, host=testbed.host_address) as peer:
        chaincode_id = f"asset_1.0:{'cd' * 32}"
        meta = tmp_path / "run"
        meta.mkdir()
        (meta / "chaincode.json").write_text(json.dumps(peer.chaincode_json(chaincode_id)))
        run = builder.start("run", golang_output, meta)
        try:
            assert peer.wait_registered(chaincode_id, timeout=120), run.stderr
            [pod] = [p.to_dict() for p in admin.list(Pod, namespace=chaincode_namespace)]
            [secret] = [s.to_dict() for s in admin.list(Secret, namespace=chaincode_namespace)]
            assert "ownerReferences" not in pod["metadata"]
            owners = secret["metadata"].get("ownerReferences") or []
            assert [(o["kind"], o["name"]) for o in owners] == [("Pod", pod["metadata"]["name"])]
            assert names_of(admin, Pod, namespace) == ["peer0"]
            assert names_of(admin, Secret, namespace) == []
        finally:
            run.stop()
    assert wait_clean(admin, chaincode_namespace, None) == []

    # The small package's chaincode ends by itself; its `run` is killed before it can see that.
    small = tmp_path / "small-run"
    small.mkdir()
    plain = {
        "chaincode_id": f"asset_1.0:{'ef' * 32}",
        "peer_address": f"{testbed.host_address}:7052",
        "client_cert": "",
        "client_key": "",
        "root_cert": "",
        "mspid": "Org1MSP",
    }
    (small / "chaincode.json").write_text(json.dumps(plain))
    killed = builder.start("run", output, small)
    assert killed.wait_for_line("chaincode pod started", 60), killed.stderr
    killed.stop(signal.SIGKILL)
    [ended] = names_of(admin, Pod, chaincode_namespace)
    # Killed before or after its files went in: its init container gives up (timeouts.start)
    # or its chaincode ends; either way the pod ends with no `run` to delete it.
    wait_for(admin, ended, chaincode_namespace, phase_in("Succeeded", "Failed"), timeout=120)
    time.sleep(22)  # timeouts.leftovers after the pod's end
    again = tmp_path / "bld-again"
    again.mkdir()
    rebuilt = builder.run("build", source, metadata, again)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"deleting chaincode pod {ended}, ended with no launch" in rebuilt.stderr
    assert wait_clean(admin, chaincode_namespace, None) == []
    admin.delete(Pod, "peer0", namespace=namespace, grace_period=0)


# What a build's own scripts can put in its output, and the one line each gets in api mode.
UNTRUSTED_OUTPUTS = {
    "FIFO": ("mkfifo pipe", r"pipe is a device or FIFO$"),
    "escaping symlink": ("ln -s ../../.. up", r"symlink up points outside$"),
    "absolute symlink": ("ln -s /etc/passwd passwd", r"symlink passwd points outside$"),
    "larger than maxSize": (
        "head -c 3000000 /dev/zero > big",
        r"the build output is \d+ bytes, more than transfer\.maxSize \(2097152 bytes\)$",
    ),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("command", "problem"), UNTRUSTED_OUTPUTS.values(), ids=UNTRUSTED_OUTPUTS.keys()
)
def test_untrusted_build_output_is_refused_and_nothing_is_left(
    testbed: Testbed, admin: Client, namespace: str, tmp_path: Path, command: str, problem: str
) -> None:
    """npm runs the package's postinstall script in the builder pod, in the output directory;
    what comes back is unpacked only if the peer could keep it, and the pod checks the bound
    before sending."""
    builder = api_builder(
        testbed, admin, namespace, tmp_path, transfer={"mode": "api", "maxSize": "2Mi"}
    )
    scene = Scene(builder, admin, namespace, tmp_path)
    package = {"name": "bad-input", "version": "1.0.0", "private": True}
    source, metadata, output = node_package(
        tmp_path, package={**package, "scripts": {"postinstall": command}}
    )
    line = scene.refused(f"api: {command}", "build", [source, metadata, output], problem)
    assert re.search(r"error: .*build output (of|from) pod ", line), line


def received_bytes(pid: int) -> int:
    """How much of the build output `build` has taken so far: the size of the anonymous file
    it writes what arrives to (the source it sent is closed by then)."""
    sizes = [0]
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(descriptor).endswith(" (deleted)"):
                sizes.append(descriptor.stat().st_size)
    return max(sizes)


FAULTS: dict[str, Callable[[Testbed, Client, str, str], None]] = {
    "the builder pod deleted": lambda bed, admin, namespace, pod: admin.delete(
        Pod, pod, namespace=namespace, grace_period=0
    ),
    # A graceful restart let a stream in flight finish (the output came whole and checked);
    # a crash breaks it.
    "an API server crash": lambda bed, admin, namespace, pod: crash_apiserver(bed),
}


def crash_apiserver(testbed: Testbed) -> None:
    testbed.control_plane.restart_apiserver(down_seconds=3, stop=signal.SIGKILL)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_while_the_output_streams_back_fails_the_build_cleanly(
    testbed: Testbed, admin: Client, namespace: str, tmp_path: Path, fault: str
) -> None:
    """The fault strikes once the peer holds part of a 512 MiB output: one error line, a
    non-zero exit, an empty BUILD_OUTPUT_DIR and nothing left."""
    builder = api_builder(
        testbed, admin, namespace, tmp_path, transfer={"mode": "api", "maxSize": "1Gi"}
    )
    package = {"name": "big-output", "version": "1.0.0", "private": True}
    source, metadata, output = node_package(
        tmp_path,
        package={**package, "scripts": {"postinstall": "head -c 536870912 /dev/urandom > big"}},
    )
    build = builder.start("build", source, metadata, output)
    try:
        assert build.wait_for_line("taking the build output", 300), build.stderr
        [pod] = re.findall(r"taking the build output from pod (\S+)", build.stderr)
        deadline = time.monotonic() + 120
        while received_bytes(build.process.pid) < 32 << 20:
            assert build.process.poll() is None and time.monotonic() < deadline, build.stderr
            time.sleep(0.02)
        FAULTS[fault](testbed, admin, namespace, pod)
        code = build.process.wait(240)
    finally:
        build.stop()
    assert code != 0, build.stderr
    assert "Traceback" not in build.stderr, build.stderr
    errors = [line for line in build.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, build.stderr
    assert ERROR_LINE.match(errors[0]) and f"pod {pod}" in errors[0], errors[0]
    assert list(output.iterdir()) == []
    assert wait_clean(admin, namespace, None) == []


PACKING_LAG = 64 << 20


def sent_bytes(pid: int) -> int:
    """How far `run` has read the build output it staged (an anonymous file) into the pod's
    stream; 0 while it is still packing it. Packing only appends, yet a write in progress
    grows the file before it moves the position (a lag of hundreds of KiB was seen), so only
    a position far behind the end is the stream's."""
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if os.readlink(descriptor).endswith(" (deleted)"):
                size = descriptor.stat().st_size
                info = Path(f"/proc/{pid}/fdinfo/{descriptor.name}").read_text()
                position = int(info.split("pos:")[1].split()[0])
                if size - position > PACKING_LAG:
                    return position
    return 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_while_files_stream_into_the_chaincode_pod_fails_the_launch_cleanly(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    tmp_path: Path,
    golang_output: Path,
    fault: str,
) -> None:
    """The fault strikes once 32 MiB of a 512 MiB build output are in the pod's stream: one
    error line, a non-zero exit, and neither the pod nor its Secret left."""
    builder = api_builder(
        testbed, admin, namespace, tmp_path, transfer={"mode": "api", "maxSize": "1Gi"}
    )
    output = tmp_path / "bld"
    shutil.copytree(golang_output, output)
    (output / "output").chmod(0o755)
    with (output / "output" / "big").open("wb") as big:
        for _ in range(512):
            big.write(os.urandom(1 << 20))
    with FakePeer(tls=True, host=testbed.host_address) as peer:
        meta = tmp_path / "run"
        meta.mkdir()
        chaincode_id = f"asset_1.0:{'fa' * 32}"
        (meta / "chaincode.json").write_text(json.dumps(peer.chaincode_json(chaincode_id)))
        run = builder.start("run", output, meta)
        try:
            deadline = time.monotonic() + 240
            while sent_bytes(run.process.pid) < 32 << 20:
                assert run.process.poll() is None and time.monotonic() < deadline, run.stderr
                time.sleep(0.02)
            [pod] = names_of(admin, Pod, namespace)
            FAULTS[fault](testbed, admin, namespace, pod)
            code = run.process.wait(240)
            registered = peer.registered()
        finally:
            run.stop()
    assert chaincode_id not in registered, run.stderr
    assert code != 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, run.stderr
    assert ERROR_LINE.match(errors[0]) and f"pod {pod}" in errors[0], errors[0]
    assert wait_clean(admin, namespace, None, timeout=60) == []
