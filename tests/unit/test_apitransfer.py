"""ApiTransfer's side of a stream, with a scripted exec in place of the pod: what a build
keeps of the output it takes, and what a launch sends of it."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from k8scc.apitransfer import ApiTransfer
from k8scc.errors import K8sccError
from k8scc.kube import Kube
from k8scc.podexec import Exited
from k8scc.transfer import OUTPUT, OUTPUT_ARCHIVE

pytestmark = pytest.mark.unit

LIMIT = 1 << 30


class ScriptedPod:
    """Answers each exec as the pod's scripts would: sends `output` with its digest (but
    `output_sent` of it), or keeps what it is sent."""

    def __init__(self, output: bytes = b"") -> None:
        self.output = output
        self.output_sent = output
        self.received: list[tuple[list[str], bytes]] = []

    def exec(
        self,
        name: str,
        container: str,
        command: list[str],
        stdin: BinaryIO | None,
        on_stdout: Callable[[bytes], None],
        read_seconds: float,
    ) -> Exited:
        if stdin is not None:
            self.received.append((command, stdin.read()))
            return Exited(0, "", "")
        on_stdout(self.output_sent)
        digest = hashlib.sha256(self.output).hexdigest()
        return Exited(0, "", f"k8scc-sha256 {digest} {len(self.output)}\n")


def tarred(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o664
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def transfer(pod: ScriptedPod) -> ApiTransfer:
    return ApiTransfer(cast(Kube, pod), LIMIT)


def test_a_build_keeps_the_output_as_the_archive_a_launch_sends(tmp_path: Path) -> None:
    """BUILD_OUTPUT_DIR holds one archive, not the tree; a launch sends exactly its bytes,
    with their digest and size, and the file the builder left aside is not in it."""
    pod = ScriptedPod(tarred({"./index.js": b"run", ".machine": b"aarch64\n"}))
    output = tmp_path / "bld"
    output.mkdir()
    assert transfer(pod).collect_build("ccbuild-x", output, ".machine") == "aarch64\n"
    assert [path.name for path in output.iterdir()] == [OUTPUT_ARCHIVE]
    kept = (output / OUTPUT_ARCHIVE).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(kept), mode="r:") as tar:
        assert [(m.name, m.mode) for m in tar] == [("index.js", 0o444)]

    launching = transfer(pod)
    launching.stage_run("cc-x-0a1b2c3d", output)
    launching.delivery("cc-x", "chaincode")[1]()  # type: ignore[index]
    ((command, sent),) = pod.received
    assert sent == kept
    assert command[-2:] == [hashlib.sha256(kept).hexdigest(), str(len(kept))]


def test_a_launch_packs_the_tree_of_a_build_made_with_the_volume(tmp_path: Path) -> None:
    """A build from before the move to transfer.mode api still launches."""
    output = tmp_path / "bld"
    (output / OUTPUT).mkdir(parents=True)
    (output / OUTPUT / "chaincode").write_bytes(b"binary")
    pod = ScriptedPod()
    launching = transfer(pod)
    launching.stage_run("cc-x-0a1b2c3d", output)
    launching.delivery("cc-x", "chaincode")[1]()  # type: ignore[index]
    ((command, sent),) = pod.received
    assert command[-2:] == [hashlib.sha256(sent).hexdigest(), str(len(sent))]
    with tarfile.open(fileobj=io.BytesIO(sent), mode="r:") as tar:
        assert [(m.name, m.mode) for m in tar] == [("chaincode", 0o444)]


def test_an_output_damaged_on_the_way_is_never_kept(tmp_path: Path) -> None:
    """The digest is checked before anything is written into BUILD_OUTPUT_DIR."""
    pod = ScriptedPod(tarred({"index.js": b"run"}))
    pod.output_sent = pod.output[:-512]
    with pytest.raises(K8sccError, match=r"build output of pod ccbuild-x arrived damaged"):
        transfer(pod).collect_build("ccbuild-x", tmp_path, ".machine")
    assert list(tmp_path.iterdir()) == []
