"""pack writes a checked tree as a tar stream and returns its digest; unpack takes an untrusted
stream back and refuses whatever the peer would not persist, with one clear message."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from k8scc.archive import SMALL, Digesting, pack, unpack
from k8scc.errors import K8sccError

pytestmark = [pytest.mark.unit]

WHAT = "build output"
LIMIT = 1024 * 1024

Member = tuple[tarfile.TarInfo, bytes]


def regular(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def directory(name: str, mode: int = 0o755) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, b""


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def special(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, b""


def stream(*members: Member) -> io.BytesIO:
    """A tar stream holding exactly these entries, in this order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buffer.seek(0)
    return buffer


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    path = tmp_path / "destination"
    path.mkdir()
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "file.txt").write_text("top")
    (root / "nothing").write_bytes(b"")
    (root / "sub" / "data.bin").write_bytes(bytes(range(256)) * 2000)
    (root / "sub" / "deeper" / "leaf").write_text("leaf")
    (root / "tool").write_text("#!/bin/sh\n")
    (root / "tool").chmod(0o755)
    (root / "private").write_text("mine")
    (root / "private").chmod(0o600)
    (root / "sub").chmod(0o700)
    (root / "link-to-file").symlink_to("file.txt")
    (root / "link-to-dir").symlink_to("sub/deeper")
    (root / "sub" / "up").symlink_to("../file.txt")
    return root


def refused(destination: Path, tar: io.BytesIO, match: str, limit: int = LIMIT) -> None:
    """unpack refuses the stream with a one-line message naming what it was."""
    with pytest.raises(K8sccError, match=f"^{WHAT}: {match}") as raised:
        unpack(tar, destination, WHAT, limit)
    assert "\n" not in str(raised.value)


def packed(source: Path, read_only: bool = False) -> dict[str, tarfile.TarInfo]:
    buffer = io.BytesIO()
    pack(source, buffer, WHAT, LIMIT, read_only)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer, mode="r:") as tar:
        return {member.name: member for member in tar}


def snapshot(root: Path) -> dict[str, tuple[str, bytes, bool]]:
    """Each path below root: its kind, its content (a link's target) and whether it runs."""
    found: dict[str, tuple[str, bytes, bool]] = {}
    for path in root.rglob("*"):
        name = str(path.relative_to(root))
        mode = path.lstat().st_mode
        if path.is_symlink():
            found[name] = ("link", os.readlink(path).encode(), False)
        elif path.is_dir():
            found[name] = ("dir", b"", True)
        else:
            found[name] = ("file", path.read_bytes(), bool(mode & stat.S_IXUSR))
    return found


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# -- Digesting ---------------------------------------------------------------------------------


def test_digesting_counts_size_and_sha256_of_what_it_writes() -> None:
    """What goes through reaches the file, and size and digest are those of all of it."""
    file = io.BytesIO()
    sink = Digesting(file, 100, WHAT)
    for chunk in (b"hello ", b"", b"world"):
        sink.write(chunk)
    assert file.getvalue() == b"hello world"
    assert sink.size == 11
    assert sink.hexdigest() == hashlib.sha256(b"hello world").hexdigest()


def test_digesting_takes_its_limit_and_refuses_one_byte_more() -> None:
    """Exactly `limit` bytes are fine; the byte past it is refused and never written."""
    file = io.BytesIO()
    sink = Digesting(file, 10, WHAT)
    sink.write(b"0123456789")
    with pytest.raises(
        K8sccError, match=rf"^{WHAT} is larger than transfer\.maxSize \(10 bytes\)$"
    ):
        sink.write(b"!")
    assert file.getvalue() == b"0123456789"


# -- pack --------------------------------------------------------------------------------------


def test_pack_returns_the_sha256_of_the_stream_it_wrote(source: Path) -> None:
    """The digest is that of the bytes written, and they are a tar of the tree."""
    buffer = io.BytesIO()
    digest = pack(source, buffer, WHAT, LIMIT)
    assert digest == hashlib.sha256(buffer.getvalue()).hexdigest()
    buffer.seek(0)
    with tarfile.open(fileobj=buffer, mode="r:") as tar:
        names = set(tar.getnames())
    assert names == {str(path.relative_to(source)) for path in source.rglob("*")}


def test_pack_makes_entries_readable_by_the_pods_user(source: Path) -> None:
    """Files and directories are opened to others, links stay links, executables run."""
    members = packed(source)
    assert members["sub"].isdir()
    assert members["sub"].mode == 0o755
    assert members["private"].mode == 0o644
    assert members["tool"].mode == 0o755
    assert members["file.txt"].size == 3
    assert members["link-to-dir"].issym()
    assert members["link-to-dir"].linkname == "sub/deeper"
    assert members["sub/up"].linkname == "../file.txt"


def test_pack_read_only_leaves_no_write_bit_on_files(source: Path) -> None:
    """With read_only no file in the stream is writable by anyone; directories still are."""
    members = packed(source, read_only=True)
    files = [member for member in members.values() if member.isreg()]
    assert files
    assert all(member.mode & 0o222 == 0 for member in files)
    assert members["tool"].mode == 0o555
    assert members["file.txt"].mode == 0o444
    assert members["sub"].mode == 0o755


def test_pack_refuses_a_tree_larger_than_the_limit(source: Path) -> None:
    """The stream is bounded like any transfer."""
    with pytest.raises(
        K8sccError, match=rf"^{WHAT} is larger than transfer\.maxSize \(1000 bytes\)$"
    ):
        pack(source, io.BytesIO(), WHAT, 1000)


def test_pack_refuses_what_walk_refuses(source: Path) -> None:
    """The tree is checked: a link that points outside is not packed."""
    (source / "sub" / "escape").symlink_to("../../elsewhere")
    with pytest.raises(K8sccError, match=f"^{WHAT}: symlink sub/escape points outside$"):
        pack(source, io.BytesIO(), WHAT, LIMIT)


def test_pack_refuses_a_fifo(source: Path) -> None:
    """Only files, directories and links go into a stream."""
    os.mkfifo(source / "pipe")
    with pytest.raises(K8sccError, match=f"^{WHAT}: pipe is not a regular file or directory$"):
        pack(source, io.BytesIO(), WHAT, LIMIT)


# -- round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize("read_only", [False, True])
def test_unpack_gives_back_the_packed_tree(
    source: Path, destination: Path, read_only: bool
) -> None:
    """Files, bytes, empty directories, relative links and executable bits survive."""
    buffer = io.BytesIO()
    pack(source, buffer, WHAT, LIMIT, read_only)
    buffer.seek(0)
    unpack(buffer, destination, WHAT, LIMIT)
    assert snapshot(destination) == snapshot(source)
    assert (destination / "link-to-dir" / "leaf").read_text() == "leaf"


# -- unpack: what is accepted ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        (regular("entry", mode=0o000), 0o600),
        (regular("entry", mode=0o640), 0o640),
        (regular("entry", mode=0o666), 0o644),
        (regular("entry", mode=0o777), 0o755),
        (regular("entry", mode=0o4755), 0o755),
        (regular("entry", mode=0o2755), 0o755),
        (regular("entry", mode=0o1644), 0o644),
        (directory("entry", mode=0o000), 0o700),
        (directory("entry", mode=0o777), 0o755),
        (directory("entry", mode=0o1777), 0o755),
        (directory("entry", mode=0o2750), 0o750),
    ],
)
def test_unpack_modes_are_owner_usable_and_never_special(
    destination: Path, member: Member, expected: int
) -> None:
    """At least owner read/write (and search), no setuid/setgid/sticky, no group/other write."""
    unpack(stream(member), destination, WHAT, LIMIT)
    assert mode_of(destination / "entry") == expected


def test_unpack_makes_missing_parent_directories_owner_only(destination: Path) -> None:
    """A file whose directories have no entry of their own still lands, below 0700 ones."""
    unpack(stream(regular("a/b/file", b"deep")), destination, WHAT, LIMIT)
    assert (destination / "a" / "b" / "file").read_bytes() == b"deep"
    assert mode_of(destination / "a") == 0o700
    assert mode_of(destination / "a" / "b") == 0o700


def test_unpack_skips_the_directory_itself_and_tolerates_dot_components(
    destination: Path,
) -> None:
    """`./` is the destination, and `./a/./b` is a/b."""
    unpack(stream(directory("./"), regular("./a/./b", b"x")), destination, WHAT, LIMIT)
    assert (destination / "a" / "b").read_bytes() == b"x"
    assert snapshot(destination).keys() == {"a", "a/b"}


def test_unpack_makes_links_last_and_keeps_those_that_stay_inside(destination: Path) -> None:
    """A link may come before its target, lead through another link, or dangle inside."""
    tar = stream(
        link("early", "sub/file"),
        directory("sub"),
        regular("sub/file", b"content"),
        link("sub/root", ".."),
        link("through", "sub/root/sub/file"),
        link("dangling", "not/there/yet"),
    )
    unpack(tar, destination, WHAT, LIMIT)
    assert (destination / "early").read_bytes() == b"content"
    assert (destination / "through").read_bytes() == b"content"
    assert os.readlink(destination / "sub" / "root") == ".."
    assert os.readlink(destination / "dangling") == "not/there/yet"


def test_unpack_copies_a_hardlink_to_an_unpacked_file(destination: Path) -> None:
    """The copy has the original's bytes and mode, and is a file of its own."""
    tar = stream(
        regular("sub/tool", b"#!/bin/sh\n", 0o755), link("copy", "sub/tool", tarfile.LNKTYPE)
    )
    unpack(tar, destination, WHAT, LIMIT)
    original, copy = destination / "sub" / "tool", destination / "copy"
    assert copy.read_bytes() == b"#!/bin/sh\n"
    assert mode_of(copy) == 0o755
    assert not copy.is_symlink()
    assert copy.stat().st_ino != original.stat().st_ino


def test_unpack_takes_exactly_its_limit(destination: Path) -> None:
    """Bytes of all files together may reach the limit."""
    unpack(stream(regular("a", b"x" * 60), regular("b", b"y" * 40)), destination, WHAT, 100)
    assert (destination / "b").read_bytes() == b"y" * 40


# -- unpack: what is refused -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape", "sub/../../escape", "sub/../file"])
def test_unpack_refuses_paths_that_leave_the_directory(
    destination: Path, tmp_path: Path, name: str
) -> None:
    """Absolute names and any `..` component are refused before anything is written there."""
    refused(destination, stream(regular(name, b"x")), f"tar entry {re.escape(repr(name))} leaves")
    assert not (tmp_path / "escape").exists()


def test_unpack_refuses_a_hardlink_whose_target_leaves(destination: Path) -> None:
    """A hardlink cannot copy a file from outside the directory."""
    tar = stream(link("copy", "../../etc/passwd", tarfile.LNKTYPE))
    refused(destination, tar, "tar entry '../../etc/passwd' leaves its directory$")
    assert not (destination / "copy").exists()


@pytest.mark.parametrize(
    ("members", "culprit"),
    [
        ([link("abs", "/etc")], "abs"),
        ([link("up", "..")], "up"),
        ([link("sub/up", "../../x")], "sub/up"),
        ([link("sub/zigzag", "../sub/../../x")], "sub/zigzag"),
        ([link("sub/root", ".."), link("escape", "sub/root/..")], "escape"),
        ([link("here", "."), link("sub/escape", "../here/../x")], "sub/escape"),
        ([link("sub/out", "/tmp"), link("via", "sub/out/x")], "sub/out"),
    ],
)
def test_unpack_refuses_symlinks_that_point_outside(
    destination: Path, members: list[Member], culprit: str
) -> None:
    """Absolute targets and relative ones that climb out, also through other links, are
    refused by name."""
    refused(destination, stream(*members), f"symlink {culprit} points outside$")


def test_a_link_cannot_steer_a_later_entry_outside(destination: Path, tmp_path: Path) -> None:
    """A file below a link's name is written into a real directory, never through the link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tar = stream(link("door", str(outside)), regular("door/planted", b"x"))
    refused(destination, tar, "door appears twice in the stream$")
    assert list(outside.iterdir()) == []
    assert (destination / "door").is_dir()


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_unpack_refuses_devices_and_fifos(destination: Path, kind: bytes) -> None:
    """Nothing but files, directories and links is made."""
    refused(destination, stream(special("sub/node", kind)), "sub/node is a device or FIFO$")
    assert not (destination / "sub" / "node").exists()


@pytest.mark.parametrize(
    "members",
    [
        [regular("x", b"1"), regular("x", b"2")],
        [directory("x"), regular("x", b"2")],
        [regular("x", b"1"), directory("x")],
        [regular("x", b"1"), regular("x/y", b"2")],
        [regular("x", b"1"), link("x", "target")],
        [link("x", "one"), link("x", "two")],
        [regular("x", b"1"), link("x", "x", tarfile.LNKTYPE)],
    ],
)
def test_unpack_refuses_an_entry_twice(destination: Path, members: list[Member]) -> None:
    """Nothing is written over what the stream already made."""
    refused(destination, stream(*members), ".* appears twice in the stream$")
    if (destination / "x").is_file():
        assert (destination / "x").read_bytes() == b"1"


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([link("copy", "missing", tarfile.LNKTYPE)], "No such file or directory"),
        ([link("copy", "later", tarfile.LNKTYPE), regular("later", b"x")], "No such file"),
        ([directory("sub"), link("copy", "sub", tarfile.LNKTYPE)], "Is a directory"),
    ],
)
def test_unpack_refuses_a_hardlink_without_an_unpacked_file(
    destination: Path, members: list[Member], why: str
) -> None:
    """A hardlink copies a regular file the stream already held, or nothing."""
    refused(destination, stream(*members), f"cannot unpack .*: {why}")
    assert not (destination / "copy").exists()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: raw[:100], id="truncated-header"),
        pytest.param(lambda raw: raw[:600], id="truncated-content"),
        pytest.param(lambda raw: b"\x01" * 512 + raw[512:], id="garbled-header"),
    ],
)
def test_unpack_refuses_a_damaged_stream(
    destination: Path, damage: Callable[[bytes], bytes]
) -> None:
    """tarfile's complaints become one message."""
    raw = stream(regular("file", b"z" * 1000)).getvalue()
    refused(destination, io.BytesIO(damage(raw)), "the stream is damaged: ")


@pytest.mark.parametrize(
    "members",
    [
        [regular("a", b"x" * 101)],
        [regular("a", b"x" * 60), regular("b", b"y" * 41)],
        [regular("a", b"x" * 60), link("b", "a", tarfile.LNKTYPE)],
    ],
)
def test_unpack_refuses_more_than_its_limit(destination: Path, members: list[Member]) -> None:
    """Files and hardlink copies together count against the limit."""
    refused(destination, stream(*members), r"more than transfer\.maxSize once unpacked$", 100)


def test_unpack_writes_small_and_large_files_alike(destination: Path) -> None:
    """Small files are written by the writer threads, larger ones as they are read."""
    small = [regular(f"lib/m{index}/index.js", bytes([index]) * 1000) for index in range(50)]
    large = regular("lib/big.bin", b"L" * (SMALL + 1))
    members = [*small[:25], large, *small[25:]]
    unpack(stream(*members), destination, "output", LIMIT * 1000)
    for info, data in members:
        assert (destination / info.name).read_bytes() == data
        assert mode_of(destination / info.name) == 0o644


def test_a_refused_stream_leaves_no_writer_running(destination: Path) -> None:
    """Writers are stopped before unpack raises: nothing is written into BUILD_OUTPUT_DIR
    after build has emptied it."""
    members = [regular(f"f{index}", b"x" * 100) for index in range(200)]
    members.append(regular("f7", b"again"))
    refused(destination, stream(*members), "f7 appears twice in the stream", LIMIT * 1000)
    assert not [t for t in threading.enumerate() if t.name.startswith("k8scc-unpack")]
