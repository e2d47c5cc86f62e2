"""Moving files between the peer and the pods k8scc creates.

The peer and its pods share a transfer volume (a PersistentVolumeClaim the peer mounts at a
configured path); each build or launch gets its own directory on it, named like its pod, and
removes it when done. A volume-free transfer can implement the same interface.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Protocol

from k8scc.errors import K8sccError

INPUT = "input"
OUTPUT = "output"


class Transfer(Protocol):
    def stage_build(self, name: str, source_dir: Path) -> str:
        """Makes the source available to a builder pod; returns the subPath prefix."""

    def collect_build(self, name: str, destination: Path) -> None:
        """Copies what the builder wrote into `destination`."""

    def stage_run(self, name: str, build_output: Path) -> str:
        """Makes a build's output available to a chaincode pod; returns the subPath prefix,
        unique to this launch."""

    def sweep(self, name: str, keep: str) -> None:
        """Removes what earlier launches of `name` staged and left behind, except `keep`."""

    def remove(self, name: str) -> None:
        """Removes everything staged under `name` (a build name or a subPath prefix)."""


def copy_tree(source: Path, destination: Path, what: str, readable: bool = False) -> None:
    """Copies directories, regular files and relative symlinks that stay inside `source` (what
    the peer accepts in a build output); anything else is refused by name. `readable` opens
    the copy to the non-root users pods run as."""
    if not source.is_dir():
        raise K8sccError(f"{what}: {source} is not a directory")
    root = source.resolve()
    destination.mkdir(parents=True, exist_ok=True)

    def unreadable(error: OSError) -> None:
        raise K8sccError(f"{what}: cannot read {error.filename}: {error.strerror}")

    for directory, subdirs, files in os.walk(source, onerror=unreadable):
        here = Path(directory)
        target_dir = destination / here.relative_to(source)
        for name in sorted(subdirs + files):
            path = here / name
            target = target_dir / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                link = os.readlink(path)
                # Lexical containment: resolving could loop or leave the tree through other links.
                resolved = Path(os.path.normpath(here.resolve() / link))
                if os.path.isabs(link) or (resolved != root and root not in resolved.parents):
                    raise K8sccError(f"{what}: symlink {path.relative_to(source)} points outside")
                target.symlink_to(link)
                if name in subdirs:
                    subdirs.remove(name)
            elif stat.S_ISDIR(mode):
                target.mkdir(exist_ok=True)
                target.chmod(stat.S_IMODE(mode) | (0o755 if readable else 0o700))
            elif stat.S_ISREG(mode):
                shutil.copyfile(path, target)
                target.chmod(stat.S_IMODE(mode) | (0o644 if readable else 0o600))
            else:
                raise K8sccError(
                    f"{what}: {path.relative_to(source)} is not a regular file or directory"
                )


def _space_error(error: OSError, where: Path) -> K8sccError:
    reason = {
        errno.ENOSPC: "the transfer volume is full",
        errno.EROFS: "the transfer volume is read-only",
        errno.EACCES: "permission denied on the transfer volume",
    }.get(error.errno or 0, error.strerror or str(error))
    return K8sccError(f"{reason} ({where})")


class VolumeTransfer:
    """A transfer directory per pod on a volume mounted at `mount_path` in the peer."""

    def __init__(self, mount_path: Path) -> None:
        self.mount_path = mount_path

    def _dir(self, name: str) -> Path:
        return self.mount_path / name

    def _fresh(self, name: str) -> Path:
        if not self.mount_path.is_dir():
            raise K8sccError(f"transfer volume is not mounted at {self.mount_path}")
        self.remove(name)  # a leftover of an earlier incarnation killed before cleaning up
        directory = self._dir(name)
        try:
            directory.mkdir(mode=0o755)
        except OSError as error:
            raise _space_error(error, directory) from None
        return directory

    def stage_build(self, name: str, source_dir: Path) -> str:
        directory = self._fresh(name)
        try:
            copy_tree(source_dir, directory / INPUT, "chaincode source", readable=True)
            output = directory / OUTPUT
            output.mkdir()
            # The builder pod runs as a non-root uid of the build image.
            output.chmod(0o777)
        except OSError as error:
            raise _space_error(error, directory) from None
        return name

    def collect_build(self, name: str, destination: Path) -> None:
        try:
            copy_tree(self._dir(name) / OUTPUT, destination, "build output")
        except OSError as error:
            raise _space_error(error, destination) from None

    def stage_run(self, name: str, build_output: Path) -> str:
        # A launch may overlap the end of an earlier one of the same name: never share a dir.
        launch = f"{name}-{secrets.token_hex(4)}"
        directory = self._fresh(launch)
        try:
            copy_tree(build_output, directory / OUTPUT, "build output", readable=True)
        except BaseException as error:
            # The caller learns the directory's name only on success, so it cannot remove it.
            self.remove(launch)
            if isinstance(error, OSError):
                raise _space_error(error, directory) from None
            raise
        return launch

    def sweep(self, name: str, keep: str) -> None:
        # Exactly `<name>-<8 hex>`: another chaincode's name may start with this one's.
        launch = re.compile(rf"{re.escape(name)}-[0-9a-f]{{8}}")
        for directory in self.mount_path.iterdir():
            if launch.fullmatch(directory.name) and directory.name != keep:
                self.remove(directory.name)

    def remove(self, name: str) -> None:
        directory = self._dir(name)
        if directory.exists() or directory.is_symlink():
            shutil.rmtree(directory, ignore_errors=True)
