"""Moving files between the peer and its pods through the Kubernetes API, with no volume: the
way kubectl cp does, tar streams over exec, which every Fabric image can run (sh, tar, head,
sha256sum). Each pod holds its files in an emptyDir mounted at podscripts.POD_DIR.

The container that needs files waits for them before its own command (podscripts); `build`
packs the source, and once that container runs, streams the tar into it with its sha256 and
size: the pod keeps exactly that many bytes, checks the digest and unpacks them. A build's
output comes back from the build container, which stays once its build has worked, keeping the
pod (and its emptyDir) alive: it packs the output, says its digest and size, and sends it;
the peer's copy is checked against that digest and, with archive.unpack's checks, written
again as the archive a launch sends (archive.repack), kept in BUILD_OUTPUT_DIR in place of
the tree. `run` streams that archive as it is (or packs the tree of a build made with the
transfer volume). Nothing else is written outside the pod but anonymous temporary files, gone
with the step. The scripts the pods run are in podscripts.py."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from k8scc import archive
from k8scc.errors import K8sccError
from k8scc.podscripts import RECEIVE_SCRIPT, SEND_SCRIPT
from k8scc.render import BUILD_CONTAINER
from k8scc.transfer import OUTPUT, OUTPUT_ARCHIVE

if TYPE_CHECKING:
    from k8scc.kube import Kube

DIGEST_LINE = re.compile(r"k8scc-sha256 ([0-9a-f]{64}) ([0-9]+)")
# A stream with nothing to read for this long is dead; a pod sends steadily once it sends.
READ_SECONDS = 120.0


def _complaint(stderr: str, fallback: str) -> str:
    """The command's own `k8scc:` line, else the last line it wrote, else `fallback`."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    ours = [line.removeprefix("k8scc: ") for line in lines if line.startswith("k8scc: ")]
    return (ours or lines or [fallback])[-1][:400]


class ApiTransfer:
    """Files for one build or launch, staged in an anonymous temporary file until the pod
    takes them."""

    through_api = True

    def __init__(self, kube: Kube, max_bytes: int) -> None:
        self.kube = kube
        self.max_bytes = max_bytes
        self._staged: BinaryIO | None = None
        self._digest = ""
        self._size = 0

    def _stage(self, tree: Path, what: str, read_only: bool) -> None:
        self.remove("")
        # Kept open past this call until the pod takes it: closing it is what removes it.
        staged = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._digest = archive.pack(tree, staged, what, self.max_bytes, read_only)
        except BaseException:
            staged.close()
            raise
        self._size = staged.tell()
        self._staged = staged

    def stage_build(self, name: str, source: Path) -> None:
        self._stage(source, "chaincode source", read_only=False)

    def stage_run(self, launch: str, build_output: Path) -> None:
        packed = build_output / OUTPUT_ARCHIVE
        if not packed.is_file():  # built with the transfer volume
            self._stage(build_output / OUTPUT, "build output", read_only=True)
            return
        self.remove("")
        staged = packed.open("rb")
        try:
            sha256 = hashlib.sha256()
            while chunk := staged.read(archive.CHUNK):
                sha256.update(chunk)
        except BaseException:
            staged.close()
            raise
        self._digest, self._size, self._staged = sha256.hexdigest(), staged.tell(), staged

    def delivery(self, pod: str, container: str) -> tuple[str, Callable[[], None]] | None:
        """What the pod's supervisor does once `container`, which waits for the files, runs."""
        return container, lambda: self._deliver(pod, container)

    def _deliver(self, pod: str, container: str) -> None:
        staged = self._staged
        if staged is None:
            raise K8sccError(f"nothing staged for pod {pod}")
        staged.seek(0)
        command = ["/bin/sh", "-c", RECEIVE_SCRIPT, "k8scc-receive", self._digest, str(self._size)]
        exited = self.kube.exec(pod, container, command, staged, lambda _: None, READ_SECONDS)
        if exited.code != 0:
            why = _complaint(exited.stderr, exited.message or f"exit code {exited.code}")
            raise K8sccError(f"sending files into pod {pod} failed: {why}")
        self.remove("")

    def collect_build(self, pod: str, build_output: Path, aside: str) -> str:
        """The build output of `pod`, checked and kept as build_output/OUTPUT_ARCHIVE, but
        for its top-level file `aside`, whose first bytes are returned."""
        what = f"build output of pod {pod}"
        with tempfile.TemporaryFile() as received:
            sink = archive.Digesting(received, self.max_bytes, what)
            command = ["/bin/sh", "-c", SEND_SCRIPT, "k8scc-send", str(self.max_bytes)]
            exited = self.kube.exec(pod, BUILD_CONTAINER, command, None, sink.write, READ_SECONDS)
            if exited.code != 0:
                why = _complaint(exited.stderr, exited.message or f"exit code {exited.code}")
                raise K8sccError(f"taking the build output from pod {pod} failed: {why}")
            said = DIGEST_LINE.search(exited.stderr)
            if said is None:
                raise K8sccError(f"{what}: the pod sent no digest")
            if (sink.hexdigest(), sink.size) != (said.group(1), int(said.group(2))):
                raise K8sccError(
                    f"{what} arrived damaged: {sink.size} bytes of sha256 {sink.hexdigest()},"
                    f" the pod sent {said.group(2)} of sha256 {said.group(1)}"
                )
            received.seek(0)
            fd = os.open(build_output / OUTPUT_ARCHIVE, archive.CREATE, 0o600)
            with os.fdopen(fd, "wb") as kept:
                taken = archive.repack(received, kept, what, self.max_bytes, aside)
        return taken.decode(errors="replace")

    def sweep(self, name: str, keep: str) -> None:
        """Nothing outlives a launch's pod: its files are in the pod's emptyDir."""

    def leftovers(self, older_than: float) -> list[str]:
        return []

    def remove(self, name: str) -> None:
        """Drops what is staged: it is an anonymous file, so only memory of it remains."""
        if self._staged is not None:
            self._staged.close()
            self._staged = None
