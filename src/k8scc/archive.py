"""Trees packed into tar streams and unpacked from them, for the transfer mode with no
volume: what k8scc sends into a pod is a tree it checked (tree.walk), and what comes back from
a pod is untrusted (a build runs the chaincode's own code), so unpacking refuses whatever the
peer would not persist: paths that leave the directory, links that point out, devices and
FIFOs, an entry twice, more bytes than the configured bound. Links are made last and checked
against the finished tree, so no link can steer a later entry outside. A build's output is
repacked rather than unpacked: the same checks, made on the stream alone, and the tar written
again as the one archive the peer keeps and a launch sends."""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, BinaryIO

from k8scc.errors import K8sccError
from k8scc.tree import copied_mode, stays_inside, walk

CHUNK = 1024 * 1024


class Digesting:
    """A file being written, with the sha256 and size of what went in; past `limit` bytes
    it refuses more."""

    def __init__(self, file: BinaryIO, limit: int, what: str) -> None:
        self.file = file
        self.limit = limit
        self.what = what
        self.size = 0
        self._sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise K8sccError(f"{self.what} is larger than transfer.maxSize ({self.limit} bytes)")
        self._sha256.update(data)
        self.file.write(data)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


def pack(source: Path, into: BinaryIO, what: str, limit: int, read_only: bool = False) -> str:
    """Writes the tree as a tar stream readable by the pod's non-root user (read-only files
    when `read_only`, as a launch's are); returns its sha256."""
    sink = Digesting(into, limit, what)
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:  # type: ignore[call-overload]
        for entry in walk(source, what):
            info = tarfile.TarInfo(entry.relative)
            info.mtime = entry.mtime
            if entry.link:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.link, 0o777
                tar.addfile(info)
            elif stat.S_ISDIR(entry.mode):
                info.type, info.mode = tarfile.DIRTYPE, copied_mode(entry.mode, 0o755)
                tar.addfile(info)
            else:
                info.mode = copied_mode(entry.mode, 0o644, read_only)
                with open(entry.path, "rb", buffering=0) as file:
                    info.size = os.fstat(file.fileno()).st_size
                    tar.addfile(info, file)
    return sink.hexdigest()


def _inside(name: str, what: str) -> list[str]:
    """The entry's components below the directory, or an error for a path that leaves it."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise K8sccError(f"{what}: tar entry {name!r} leaves its directory")
    return parts


CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Files up to this size are read whole and written by one of WRITERS threads: on a busy disk
# creating a file waits 20-500 µs (ext4 here), which threads overlap, as npm does when it
# writes node_modules; a Node build's output is thousands of small files. Larger files are
# written as they are read. At most IN_FLIGHT bytes wait for a writer.
SMALL = 256 * 1024
WRITERS = 4
IN_FLIGHT = 8 * 1024 * 1024


def _budget(budget: list[int], size: int, what: str) -> None:
    budget[0] -= size
    if budget[0] < 0:
        raise K8sccError(f"{what}: more than transfer.maxSize once unpacked")


def _write(source: IO[bytes], target: str, mode: int, budget: list[int], what: str) -> None:
    fd = os.open(target, CREATE, 0o600)
    with os.fdopen(fd, "wb") as file:
        while chunk := source.read(CHUNK):
            _budget(budget, len(chunk), what)
            file.write(chunk)
        os.fchmod(fd, mode)


def _write_whole(target: str, data: bytes, mode: int) -> None:
    fd = os.open(target, CREATE, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


class _Writers:
    """Small files written by a few threads; `finish` waits for them and raises the first
    error one met. Leaving the `with` block stops them, so nothing is written after unpack
    has returned or raised."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="k8scc-unpack")
        self._pending: list[Future[None]] = []
        self._room = threading.Condition()
        self._waiting = 0

    def __enter__(self) -> _Writers:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def write(self, target: str, data: bytes, mode: int) -> None:
        with self._room:
            self._room.wait_for(
                lambda: self._waiting == 0 or self._waiting + len(data) <= IN_FLIGHT
            )
            self._waiting += len(data)
        self._pending.append(self._pool.submit(self._written, target, data, mode))

    def _written(self, target: str, data: bytes, mode: int) -> None:
        try:
            _write_whole(target, data, mode)
        finally:
            with self._room:
                self._waiting -= len(data)
                self._room.notify_all()

    def finish(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


def _make_directories(root: str, parts: list[str], made: set[str], bits: int) -> None:
    """Each missing directory of `parts` below root, with mode `bits` (os.makedirs gives
    those above the last the umask's default). `made` holds the directories already made or
    found: no link exists while files are written, so none can have replaced one."""
    path = root
    for part in parts:
        path = os.path.join(path, part)
        if path in made:
            continue
        if not os.path.isdir(path) or os.path.islink(path):
            os.mkdir(path, bits)
        made.add(path)


def _named(root: str, error: OSError) -> str:
    """The entry an error is about, as the stream names it (a symlink's error names the
    link second)."""
    path = error.filename2 or error.filename
    return os.path.relpath(path, root) if isinstance(path, str) else str(path)


def unpack(
    stream: BinaryIO,
    destination: Path,
    what: str,
    limit: int,
    readable: bool = False,
    read_only: bool = False,
) -> None:
    """Unpacks an untrusted tar stream into the existing directory `destination`, with the
    modes copy_tree gives (`readable` and `read_only` as there)."""
    budget = [limit]
    links: list[tuple[list[str], str]] = []
    root = str(destination)
    made = {root}
    file_bits = 0o644 if readable else 0o600
    dir_bits = 0o755 if readable else 0o700
    try:
        with tarfile.open(fileobj=stream, mode="r:") as tar, _Writers() as writers:
            for member in tar:
                parts = _inside(member.name, what)
                if not parts:
                    continue  # the directory itself
                target = os.path.join(root, *parts)
                _make_directories(root, parts[:-1], made, dir_bits)
                if member.isdir():
                    _make_directories(root, parts, made, dir_bits)
                    os.chmod(target, copied_mode(member.mode | stat.S_IFDIR, dir_bits))
                elif member.isreg():
                    content = tar.extractfile(member)
                    assert content is not None  # a regular file always has content
                    mode = copied_mode(member.mode, file_bits, read_only)
                    if member.size <= SMALL:
                        data = content.read()
                        _budget(budget, len(data), what)
                        writers.write(target, data, mode)
                    else:
                        _write(content, target, mode, budget, what)
                elif member.issym():
                    links.append((parts, member.linkname))
                elif member.islnk():
                    original = os.path.join(root, *_inside(member.linkname, what))
                    writers.finish()  # the original may still be on its way
                    with open(original, "rb") as content:
                        mode = copied_mode(os.fstat(content.fileno()).st_mode, file_bits, read_only)
                        _write(content, target, mode, budget, what)
                else:
                    raise K8sccError(f"{what}: {'/'.join(parts)} is a device or FIFO")
            writers.finish()
        for parts, link in links:
            os.symlink(link, os.path.join(root, *parts))
    except (tarfile.TarError, EOFError) as error:
        raise K8sccError(f"{what}: the stream is damaged: {error}") from None
    except FileExistsError as error:
        name = _named(root, error)
        raise K8sccError(f"{what}: {name} appears twice in the stream") from None
    except OSError as error:
        name = _named(root, error)
        raise K8sccError(f"{what}: cannot unpack {name}: {error.strerror}") from None
    for parts, link in links:
        if not stays_inside(root, parts[:-1], link):
            raise K8sccError(f"{what}: symlink {'/'.join(parts)} points outside")


def _claim(kinds: dict[str, str], parts: list[str], kind: str, what: str) -> list[str]:
    """Marks the path `parts` as holding a `kind` ("dir", "file" or "link") and its parents
    as directories; returns the parents no entry had made yet. A path holds one thing only,
    as unpack finds on the disk."""
    implied = []
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        seen = kinds.get(parent)
        if seen is None:
            kinds[parent] = "dir"
            implied.append(parent)
        elif seen != "dir":
            raise K8sccError(f"{what}: {parent} appears twice in the stream")
    path = "/".join(parts)
    seen = kinds.get(path)
    if seen is not None and not seen == kind == "dir":
        raise K8sccError(f"{what}: {path} appears twice in the stream")
    kinds[path] = kind
    return implied


def _header(name: str, kind: bytes, mode: int, mtime: float, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size = kind, mode, mtime, size
    return info


def repack(stream: BinaryIO, into: BinaryIO, what: str, limit: int, aside: str) -> bytes:
    """Writes an untrusted tar stream again into `into` as pack writes a launch's tree
    (modes for the pod's user, no file writable, a hardlink as a copy, symlinks last), with
    the checks unpack makes and no file made on the disk: a build output is kept as this one
    archive, which a launch streams into its pod as it is. The top-level file `aside` is left
    out; its first bytes are returned."""
    budget = [limit]
    kinds: dict[str, str] = {}
    files: dict[str, tarfile.TarInfo] = {}
    links: dict[str, tarfile.TarInfo] = {}
    taken = b""
    try:
        with (
            tarfile.open(fileobj=stream, mode="r:") as tar,
            tarfile.open(fileobj=into, mode="w|", format=tarfile.GNU_FORMAT) as out,
        ):
            for member in tar:
                parts = _inside(member.name, what)
                if not parts:
                    continue  # the directory itself
                path = "/".join(parts)
                if not (member.isdir() or member.issym() or member.isreg() or member.islnk()):
                    raise K8sccError(f"{what}: {path} is a device or FIFO")
                kind = "dir" if member.isdir() else "link" if member.issym() else "file"
                for parent in _claim(kinds, parts, kind, what):
                    out.addfile(_header(parent, tarfile.DIRTYPE, 0o755, member.mtime))
                if member.isdir():
                    mode = copied_mode(member.mode | stat.S_IFDIR, 0o755)
                    out.addfile(_header(path, tarfile.DIRTYPE, mode, member.mtime))
                elif member.issym():
                    links[path] = member
                else:
                    original = member
                    if member.islnk():
                        named = "/".join(_inside(member.linkname, what))
                        if named not in files:
                            raise K8sccError(
                                f"{what}: hardlink {path} names {member.linkname!r},"
                                " which is no file before it"
                            )
                        original = files[named]
                    _budget(budget, original.size, what)
                    content = tar.extractfile(original)
                    assert content is not None  # a regular file always has content
                    if path == aside:
                        taken = content.read(256)
                        continue
                    files[path] = original
                    mode = copied_mode(original.mode, 0o644, read_only=True)
                    header = _header(path, tarfile.REGTYPE, mode, member.mtime, original.size)
                    out.addfile(header, content)
            targets = {path: link.linkname for path, link in links.items()}
            for path, link in links.items():
                if not stays_inside("", path.split("/")[:-1], link.linkname, targets.get):
                    raise K8sccError(f"{what}: symlink {path} points outside")
                header = _header(path, tarfile.SYMTYPE, 0o777, link.mtime)
                header.linkname = link.linkname
                out.addfile(header)
    except (tarfile.TarError, EOFError) as error:
        raise K8sccError(f"{what}: the stream is damaged: {error}") from None
    except OSError as error:
        raise K8sccError(f"{what}: cannot keep it: {error.strerror}") from None
    return taken
