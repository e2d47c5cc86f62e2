"""Moving files between the peer and the pods k8scc creates.

The peer and its pods share a transfer volume (a PersistentVolumeClaim the peer mounts at a
configured path); each build or launch gets its own directory on it, named like its pod (a
launch adds a random part), and removes it when done. A marker in each directory names the
peer that made it, so that what a killed step left behind is collected by its own peer only
(collect.py)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import time
from pathlib import Path

from k8scc.errors import K8sccError

INPUT = "input"
OUTPUT = "output"
# Holds the peer's key; its modification time is when the directory was staged.
MARKER = ".k8scc-peer"


# A symlink chain longer than this does not resolve (Linux's MAXSYMLINKS).
MAX_LINK_HOPS = 40


def _stays_inside(root: str, here: list[str], link: str) -> bool:
    """Whether `link`, a symlink target in directory `here` (components below `root`), is
    relative and resolves without ever leaving the tree. Components are resolved one at a time
    as the kernel does, following the links met on the way, so `..` climbs from where a link
    really leads; one that does not exist (yet) is taken as a directory."""
    if os.path.isabs(link):
        return False
    inside = list(here)
    pending = list(reversed(link.split("/")))
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not inside:
                return False
            inside.pop()
            continue
        try:
            target = os.readlink(os.path.join(root, *inside, part))
        except OSError:  # not a link, or not there
            inside.append(part)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            return True  # a loop leads nowhere, outside included
        if os.path.isabs(target):
            return False
        pending.extend(reversed(target.split("/")))
    return True


def _copied_mode(mode: int, least: int, read_only: bool = False) -> int:
    """Permission bits for a copy: at least `least`, at most 0755 for directories and
    executables and 0644 for other files, never setuid, setgid or sticky; `read_only` files
    lose every write bit."""
    executable = stat.S_ISDIR(mode) or mode & 0o111
    bits = (stat.S_IMODE(mode) & (0o755 if executable else 0o644)) | least
    return bits & ~0o222 if read_only else bits


def copy_tree(
    source: Path, destination: Path, what: str, readable: bool = False, read_only: bool = False
) -> None:
    """Copies directories, regular files and relative symlinks that stay inside `source` (what
    the peer accepts in a build output); anything else is refused by name. `readable` opens
    the copy to the non-root users pods run as; nothing is writable but by its owner, and
    with `read_only` no file by anyone. Directories stay writable by their owner, so the copy
    can be removed.

    A build output holds thousands of files (a Node build's node_modules), so each costs only
    what it must: one lstat from the directory scan, an open of each side, a kernel-side copy
    and an fchmod; a symlink, a readlink per component of its target."""
    if not source.is_dir():
        raise K8sccError(f"{what}: {source} is not a directory")
    root = os.path.realpath(source)
    destination.mkdir(parents=True, exist_ok=True)
    file_bits = 0o644 if readable else 0o600
    dir_bits = 0o755 if readable else 0o700
    # (source directory, its components below the root, the matching destination directory)
    pending: list[tuple[str, list[str], str]] = [(str(source), [], str(destination))]
    while pending:
        here, below, target_dir = pending.pop()
        try:
            with os.scandir(here) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            raise K8sccError(f"{what}: cannot read {here}: {error.strerror}") from None
        for entry in entries:
            target = os.path.join(target_dir, entry.name)
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                link = os.readlink(entry.path)
                if not _stays_inside(root, below, link):
                    inside = os.path.relpath(entry.path, source)
                    raise K8sccError(f"{what}: symlink {inside} points outside")
                os.symlink(link, target)
            elif stat.S_ISDIR(mode):
                os.makedirs(target, exist_ok=True)
                os.chmod(target, _copied_mode(mode, dir_bits))
                pending.append((entry.path, [*below, entry.name], target))
            elif stat.S_ISREG(mode):
                _copy_file(entry.path, target, _copied_mode(mode, file_bits, read_only))
            else:
                inside = os.path.relpath(entry.path, source)
                raise K8sccError(f"{what}: {inside} is not a regular file or directory")


def _copy_file(source: str, target: str, mode: int) -> None:
    """Copies one regular file in the kernel. O_NOFOLLOW: the file was a regular file when
    scanned, and must not have become a link since; O_EXCL: nothing is copied over."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    reading = os.open(source, os.O_RDONLY | flags)
    try:
        writing = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flags, 0o600)
        try:
            size = os.fstat(reading).st_size
            copied = 0
            while copied < size:
                sent = os.sendfile(writing, reading, copied, size - copied)
                if sent == 0:
                    break  # the file shrank while being copied
                copied += sent
            os.fchmod(writing, mode)
        finally:
            os.close(writing)
    finally:
        os.close(reading)


def _space_error(error: OSError, where: Path) -> K8sccError:
    reason = {
        errno.ENOSPC: "the transfer volume is full",
        errno.EROFS: "the transfer volume is read-only",
        errno.EACCES: "permission denied on the transfer volume",
    }.get(error.errno or 0, error.strerror or str(error))
    return K8sccError(f"{reason} ({where})")


class VolumeTransfer:
    """A transfer directory per pod on a volume mounted at `mount_path` in the peer, marked as
    made by the peer `peer_key`."""

    def __init__(self, mount_path: Path, peer_key: str) -> None:
        self.mount_path = mount_path
        self.peer_key = peer_key

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

    def take(self, name: str, file: str) -> str:
        """The text of `file` in the build's output, removed from it; empty when missing."""
        path = self._dir(name) / OUTPUT / file
        try:
            text = path.read_text(errors="replace")[:256]
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return ""
        except OSError as error:
            raise _space_error(error, path) from None
        return text

    def collect_build(self, name: str, destination: Path) -> None:
        try:
            copy_tree(self._dir(name) / OUTPUT, destination, "build output")
        except OSError as error:
            raise _space_error(error, destination) from None

    def stage_run(self, launch: str, build_output: Path) -> None:
        directory = self._fresh(launch)
        try:
            # Read-only: what a chaincode pod runs must not change under it. (A build's input
            # keeps its modes: Fabric's build commands copy it and write beside the copies.)
            copy_tree(
                build_output, directory / OUTPUT, "build output", readable=True, read_only=True
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
