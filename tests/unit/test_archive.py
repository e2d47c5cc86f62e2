"""pack writes a checked tree as a tar stream and returns its digest; unpack takes an untrusted
stream back and refuses whatever the peer would not persist, with one clear message; repack
makes the same checks and writes the stream again as pack writes a launch's tree."""

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

from k8scc.archive import SMALL, Digesting, pack, repack, unpack
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


# Takes an untrusted stream in: into a directory (unpack) or into an archive (repack).
Taker = Callable[[io.BytesIO, Path, int], None]


def unpacking(tar: io.BytesIO, destination: Path, limit: int) -> None:
    unpack(tar, destination, WHAT, limit)


def repacking(tar: io.BytesIO, destination: Path, limit: int) -> None:
    repack(tar, io.BytesIO(), WHAT, limit, ".machine")


@pytest.fixture(params=[unpacking, repacking], ids=["unpack", "repack"])
def taking(request: pytest.FixtureRequest) -> Taker:
    taker: Taker = request.param
    return taker


def refused(
    taking: Taker, destination: Path, tar: io.BytesIO, match: str, limit: int = LIMIT
) -> None:
    """The stream is refused with a one-line message naming what it was."""
    with pytest.raises(K8sccError, match=f"^{WHAT}: {match}") as raised:
        taking(tar, destination, limit)
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
    taking: Taker, destination: Path, tmp_path: Path, name: str
) -> None:
    """Absolute names and any `..` component are refused before anything is written there."""
    refused(
        taking,
        destination,
        stream(regular(name, b"x")),
        f"tar entry {re.escape(repr(name))} leaves",
    )
    assert not (tmp_path / "escape").exists()


def test_unpack_refuses_a_hardlink_whose_target_leaves(taking: Taker, destination: Path) -> None:
    """A hardlink cannot copy a file from outside the directory."""
    tar = stream(link("copy", "../../etc/passwd", tarfile.LNKTYPE))
    refused(taking, destination, tar, "tar entry '../../etc/passwd' leaves its directory$")
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
    taking: Taker, destination: Path, members: list[Member], culprit: str
) -> None:
    """Absolute targets and relative ones that climb out, also through other links, are
    refused by name."""
    refused(taking, destination, stream(*members), f"symlink {culprit} points outside$")


def test_a_link_cannot_steer_a_later_entry_outside(destination: Path, tmp_path: Path) -> None:
    """A file below a link's name is written into a real directory, never through the link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tar = stream(link("door", str(outside)), regular("door/planted", b"x"))
    refused(unpacking, destination, tar, "door appears twice in the stream$")
    assert list(outside.iterdir()) == []
    assert (destination / "door").is_dir()


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_unpack_refuses_devices_and_fifos(taking: Taker, destination: Path, kind: bytes) -> None:
    """Nothing but files, directories and links is made."""
    refused(taking, destination, stream(special("sub/node", kind)), "sub/node is a device or FIFO$")
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
        [link("x", "/tmp"), regular("x/y", b"2")],
    ],
)
def test_unpack_refuses_an_entry_twice(
    taking: Taker, destination: Path, members: list[Member]
) -> None:
    """Nothing is written over what the stream already made."""
    refused(taking, destination, stream(*members), ".* appears twice in the stream$")
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
    refused(unpacking, destination, stream(*members), f"cannot unpack .*: {why}")
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
    taking: Taker, destination: Path, damage: Callable[[bytes], bytes]
) -> None:
    """tarfile's complaints become one message."""
    raw = stream(regular("file", b"z" * 1000)).getvalue()
    refused(taking, destination, io.BytesIO(damage(raw)), "the stream is damaged: ")


@pytest.mark.parametrize(
    "members",
    [
        [regular("a", b"x" * 101)],
        [regular("a", b"x" * 60), regular("b", b"y" * 41)],
        [regular("a", b"x" * 60), link("b", "a", tarfile.LNKTYPE)],
    ],
)
def test_unpack_refuses_more_than_its_limit(
    taking: Taker, destination: Path, members: list[Member]
) -> None:
    """Files and hardlink copies together count against the limit."""
    refused(
        taking, destination, stream(*members), r"more than transfer\.maxSize once unpacked$", 100
    )


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
    refused(
        unpacking, destination, stream(*members), "f7 appears twice in the stream", LIMIT * 1000
    )
    assert not [t for t in threading.enumerate() if t.name.startswith("k8scc-unpack")]


# -- repack ------------------------------------------------------------------------------------


def members_of(archive: bytes) -> list[tuple[str, bytes, int, bytes, str]]:
    """Each entry in order: name, type, mode, content and link target."""
    found = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar:
            content = tar.extractfile(member) if member.isreg() else None
            data = content.read() if content else b""
            found.append((member.name, member.type, member.mode, data, member.linkname))
    return found


def repacked(tar: io.BytesIO, aside: str = ".machine") -> tuple[bytes, bytes]:
    into = io.BytesIO()
    taken = repack(tar, into, WHAT, LIMIT, aside)
    return into.getvalue(), taken


def test_repack_writes_what_pack_writes_of_the_unpacked_tree(
    source: Path, destination: Path
) -> None:
    """The archive a build keeps is the one a launch would pack from the tree unpack makes:
    same entries, bytes, links and read-only modes (symlinks last)."""
    buffer = io.BytesIO()
    pack(source, buffer, WHAT, LIMIT)
    archive, _ = repacked(io.BytesIO(buffer.getvalue()))
    unpack(io.BytesIO(buffer.getvalue()), destination, WHAT, LIMIT)
    again = io.BytesIO()
    pack(destination, again, WHAT, LIMIT, read_only=True)
    ours, theirs = members_of(archive), members_of(again.getvalue())
    assert sorted(ours) == sorted(theirs)
    kinds = [kind for _, kind, _, _, _ in ours]
    first_link = kinds.index(tarfile.SYMTYPE)
    assert set(kinds[first_link:]) == {tarfile.SYMTYPE}


def test_repack_keeps_modification_times(source: Path) -> None:
    """Times are the stream's: a launch's files are as old as the build made them."""
    os.utime(source / "file.txt", (1_000_000, 1_000_000))
    buffer = io.BytesIO()
    pack(source, buffer, WHAT, LIMIT)
    archive, _ = repacked(io.BytesIO(buffer.getvalue()))

    def times(raw: bytes) -> dict[str, float]:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            return {member.name: member.mtime for member in tar}

    assert times(archive) == times(buffer.getvalue())
    assert len(set(times(archive).values())) > 1


def test_repack_takes_the_aside_file_out_and_returns_its_start() -> None:
    """Only the top-level one: a file of that name deeper down is the chaincode's."""
    archive, taken = repacked(
        stream(regular(".machine", b"x86_64\n" + b"#" * 1000), regular("sub/.machine", b"mine"))
    )
    assert taken == (b"x86_64\n" + b"#" * 1000)[:256]
    assert [name for name, *_ in members_of(archive)] == ["sub", "sub/.machine"]
    _, none = repacked(stream(regular("file", b"x")))
    assert none == b""


def test_repack_makes_each_hardlink_a_copy_and_each_missing_parent_a_directory() -> None:
    """A pod unpacks plain files below directories of the pod's modes."""
    archive, _ = repacked(
        stream(regular("./a/b/tool", b"run", 0o750), link("copy", "a/b/tool", tarfile.LNKTYPE))
    )
    assert members_of(archive) == [
        ("a", tarfile.DIRTYPE, 0o755, b"", ""),
        ("a/b", tarfile.DIRTYPE, 0o755, b"", ""),
        ("a/b/tool", tarfile.REGTYPE, 0o554, b"run", ""),
        ("copy", tarfile.REGTYPE, 0o554, b"run", ""),
    ]


def test_repack_checks_links_against_the_whole_stream(destination: Path) -> None:
    """With no tree on the disk, a link through another link is resolved from the stream."""
    archive, _ = repacked(
        stream(
            link("early", "sub/file"),
            regular("sub/file", b"content"),
            link("sub/root", ".."),
            link("through", "sub/root/sub/file"),
        )
    )
    unpack(io.BytesIO(archive), destination, WHAT, LIMIT)
    assert (destination / "through").read_bytes() == b"content"
    assert (destination / "early").read_bytes() == b"content"


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([link("copy", "missing", tarfile.LNKTYPE)], "hardlink copy names 'missing'"),
        ([link("copy", "later", tarfile.LNKTYPE), regular("later", b"x")], "hardlink copy names"),
        ([directory("sub"), link("copy", "sub", tarfile.LNKTYPE)], "hardlink copy names 'sub'"),
        ([regular(".machine", b"x"), link("copy", ".machine", tarfile.LNKTYPE)], "hardlink copy"),
    ],
)
def test_repack_refuses_a_hardlink_without_a_file_before_it(
    destination: Path, members: list[Member], problem: str
) -> None:
    """A hardlink copies a regular file the stream already held, or nothing."""
    refused(repacking, destination, stream(*members), f"{problem}.*, which is no file before it$")


def test_a_repacked_archive_unpacks_for_a_pod_read_only(destination: Path) -> None:
    """As the transfer volume holds a launch's files: readable by the pod's user, no file
    writable."""
    archive, _ = repacked(stream(regular("dir/file", b"x", 0o600), regular("tool", b"y", 0o755)))
    unpack(io.BytesIO(archive), destination, WHAT, LIMIT, readable=True, read_only=True)
    assert mode_of(destination / "dir") == 0o755
    assert mode_of(destination / "dir" / "file") == 0o444
    assert mode_of(destination / "tool") == 0o555
