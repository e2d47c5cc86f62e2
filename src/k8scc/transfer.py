"""Moving files between the peer and the pods k8scc creates.

The peer and its pods share a transfer volume (a PersistentVolumeClaim the peer mounts at a
configured path); each build or launch gets its own directory on it, named like its pod (a
launch adds a random part), and removes it when done. A marker in each directory names the
peer that made it, so that what a killed step left behind is collected by its own peer only
(collect.py)."""

from __future__ import annotations

import errno
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from k8scc.errors import K8sccError
from k8scc.tree import copy_tree

if TYPE_CHECKING:
    from typing import TypeAlias

    from k8scc.apitransfer import ApiTransfer
    from k8scc.config import Config
    from k8scc.kube import Kube

    # What the steps hold: the claim's directories, or streams through the API.
    Transfer: TypeAlias = "VolumeTransfer | ApiTransfer"

INPUT = "input"
OUTPUT = "output"
# What BUILD_OUTPUT_DIR holds in place of OUTPUT when the output came through the API: the
# tree as a launch streams it, checked (archive.repack), one file where a Node build has
# thousands to write on the peer's disk.
OUTPUT_ARCHIVE = "output.tar"
# Holds the peer's key; its modification time is when the directory was staged.
MARKER = ".k8scc-peer"


def _space_error(error: OSError, where: Path) -> K8sccError:
    reason = {
        errno.ENOSPC: "the transfer volume is full",
        errno.EROFS: "the transfer volume is read-only",
        errno.EACCES: "permission denied on the transfer volume",
    }.get(error.errno or 0, error.strerror or str(error))
    return K8sccError(f"{reason} ({where})")


def _taken(path: Path) -> str:
    """The start of a file the builder left beside the output, removed from it; empty when
    it is missing or is not a file."""
    try:
        if path.is_symlink() or not path.is_file():
            return ""
        text = path.read_text(errors="replace")[:256]
        path.unlink()
    except OSError:
        return ""
    return text


class VolumeTransfer:
    """A transfer directory per pod on a volume mounted at `mount_path` in the peer, marked as
    made by the peer `peer_key`."""

    # Pods read and write the volume themselves: nothing is sent, nothing needs collecting.
    through_api = False

    def __init__(self, mount_path: Path, peer_key: str) -> None:
        self.mount_path = mount_path
        self.peer_key = peer_key

    def delivery(self, pod: str, container: str) -> tuple[str, Callable[[], None]] | None:
        return None

    def _dir(self, name: str) -> Path:
        return self.mount_path / name

    def _fresh(self, name: str) -> Path:
        if not self.mount_path.is_dir():
            raise K8sccError(f"transfer volume is not mounted at {self.mount_path}")
        directory = self._dir(name)
        try:
            directory.mkdir(mode=0o755)
            (directory / MARKER).write_text(self.peer_key)
        except OSError as error:
            raise _space_error(error, directory) from None
        return directory

    def stage_build(self, name: str, source_dir: Path) -> None:
        directory = self._fresh(name)
        try:
            copy_tree(source_dir, directory / INPUT, "chaincode source", readable=True)
            output = directory / OUTPUT
            output.mkdir()
            # The builder pod runs as a non-root uid of the build image.
            output.chmod(0o777)
        except OSError as error:
            raise _space_error(error, directory) from None

    def collect_build(self, name: str, build_output: Path, aside: str) -> str:
        """The pod's output copied into build_output/OUTPUT, but for its top-level file
        `aside`, whose first bytes are returned."""
        destination = build_output / OUTPUT
        try:
            copy_tree(self._dir(name) / OUTPUT, destination, "build output")
        except OSError as error:
            raise _space_error(error, destination) from None
        return _taken(destination / aside)

    def stage_run(self, launch: str, build_output: Path) -> None:
        directory = self._fresh(launch)
        packed = build_output / OUTPUT_ARCHIVE
        try:
            # Read-only: what a chaincode pod runs must not change under it. (A build's input
            # keeps its modes: Fabric's build commands copy it and write beside the copies.)
            if packed.is_file():  # built with transfer.mode api
                # Imported here: only a launch of such a build needs tarfile.
                from k8scc import archive  # noqa: PLC0415

                (directory / OUTPUT).mkdir()
                with packed.open("rb") as stream:
                    # Checked when it was built, and bounded by it.
                    archive.unpack(
                        stream, directory / OUTPUT, "build output", sys.maxsize, True, True
                    )
            else:
                copy_tree(
                    build_output / OUTPUT,
                    directory / OUTPUT,
                    "build output",
                    readable=True,
                    read_only=True,
                )
        except OSError as error:
            raise _space_error(error, directory) from None

    def sweep(self, name: str, keep: str) -> None:
        """Removes the directories of earlier launches of pod `name`, once that pod is gone."""
        # Exactly `<name>-<8 hex>`: another chaincode's name may start with this one's.
        launch = re.compile(rf"{re.escape(name)}-[0-9a-f]{{8}}")
        for directory in self.mount_path.iterdir():
            if launch.fullmatch(directory.name) and directory.name != keep:
                self.remove(directory.name)

    def leftovers(self, older_than: float) -> list[str]:
        """This peer's directories staged more than `older_than` seconds ago."""
        found = []
        now = time.time()
        for directory in sorted(self.mount_path.iterdir()):
            marker = directory / MARKER
            try:
                ours = marker.read_text() == self.peer_key
                age = now - marker.stat().st_mtime
            except OSError:  # not a transfer directory, or being removed
                continue
            if ours and age > older_than:
                found.append(directory.name)
        return found

    def remove(self, name: str) -> None:
        directory = self._dir(name)
        try:
            if directory.is_symlink():
                directory.unlink()
            else:
                shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise K8sccError(
                f"transfer directory {directory} not removed: {error.filename}: {error.strerror}"
            ) from None


def choose(config: Config, kube: Kube, peer_key: str) -> VolumeTransfer | ApiTransfer:
    """The transfer mode k8scc.yaml selects (transfer.mode)."""
    if config.transfer_mode == "api":
        # Imported here: the volume mode's `run`, resident per chaincode, needs no tarfile.
        from k8scc.apitransfer import ApiTransfer  # noqa: PLC0415

        return ApiTransfer(kube, config.transfer_max_bytes)
    return VolumeTransfer(config.transfer_mount_path, peer_key)
