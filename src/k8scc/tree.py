"""The files of a tree as the peer itself would persist them: directories, regular files and
relative symlinks that stay inside; anything else is refused by name. Copied on a disk
(copy_tree) or packed for a stream (archive.py), with the same checks and the same modes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from k8scc.errors import K8sccError
from k8scc.record import record

# A symlink chain longer than this does not resolve (Linux's MAXSYMLINKS).
MAX_LINK_HOPS = 40


def _on_disk(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:  # not a link, or not there
        return None


def stays_inside(
    root: str, here: list[str], link: str, readlink: Callable[[str], str | None] = _on_disk
) -> bool:
    """Whether `link`, a symlink target in directory `here` (components below `root`), is
    relative and resolves without ever leaving the tree. Components are resolved one at a time
    as the kernel does, following the links met on the way, so `..` climbs from where a link
    really leads; one that does not exist (yet) is taken as a directory. `readlink` gives a
    path's link target, or None where it is no link: the disk's, or a tree not yet written."""
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
        target = readlink(os.path.join(root, *inside, part))
        if target is None:
            inside.append(part)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            return True  # a loop leads nowhere, outside included
        if os.path.isabs(target):
            return False
        pending.extend(reversed(target.split("/")))
    return True


def copied_mode(mode: int, least: int, read_only: bool = False) -> int:
    """Permission bits for a copy: at least `least`, at most 0755 for directories and
    executables and 0644 for other files, never setuid, setgid or sticky; `read_only` files
    lose every write bit."""
    executable = stat.S_ISDIR(mode) or mode & 0o111
    bits = (stat.S_IMODE(mode) & (0o755 if executable else 0o644)) | least
    return bits & ~0o222 if read_only else bits


@record
class Entry:
    """One thing in the tree: `path` on disk, `parts` its components below the root, `mode`
    and `mtime` from lstat, `link` the target of a symlink."""

    path: str
    parts: list[str]
    mode: int
    mtime: int
    link: str = ""

    @property
    def relative(self) -> str:
        return "/".join(self.parts)


def walk(source: Path, what: str) -> Iterator[Entry]:
    """The tree's entries, each directory before what it holds, names in order, each costing
    one lstat from the directory scan (a Node build output holds thousands) and a symlink a
    readlink per component of its target."""
    if not source.is_dir():
        raise K8sccError(f"{what}: {source} is not a directory")
    root = os.path.realpath(source)
    pending: list[tuple[str, list[str]]] = [(str(source), [])]
    while pending:
        here, below = pending.pop()
        try:
            with os.scandir(here) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            raise K8sccError(f"{what}: cannot read {here}: {error.strerror}") from None
        for entry in entries:
            parts = [*below, entry.name]
            status = entry.stat(follow_symlinks=False)
            mode, mtime = status.st_mode, int(status.st_mtime)
            if stat.S_ISLNK(mode):
                link = os.readlink(entry.path)
                if not stays_inside(root, below, link):
                    raise K8sccError(f"{what}: symlink {'/'.join(parts)} points outside")
                yield Entry(entry.path, parts, mode, mtime, link)
            elif stat.S_ISDIR(mode):
                yield Entry(entry.path, parts, mode, mtime)
                pending.append((entry.path, parts))
            elif stat.S_ISREG(mode):
                yield Entry(entry.path, parts, mode, mtime)
            else:
                raise K8sccError(f"{what}: {'/'.join(parts)} is not a regular file or directory")


def copy_tree(
    source: Path, destination: Path, what: str, readable: bool = False, read_only: bool = False
) -> None:
    """Copies the tree (see walk). `readable` opens the copy to the non-root users pods run
    as; nothing is writable but by its owner, and with `read_only` no file by anyone.
    Directories stay writable by their owner, so the copy can be removed."""
    destination.mkdir(parents=True, exist_ok=True)
    file_bits = 0o644 if readable else 0o600
    dir_bits = 0o755 if readable else 0o700
    for entry in walk(source, what):
        target = os.path.join(destination, *entry.parts)
        if entry.link:
            os.symlink(entry.link, target)
        elif stat.S_ISDIR(entry.mode):
            os.makedirs(target, exist_ok=True)
            os.chmod(target, copied_mode(entry.mode, dir_bits))
        else:
            copy_file(entry.path, target, copied_mode(entry.mode, file_bits, read_only))


def copy_file(source: str, target: str, mode: int) -> None:
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
