"""copy_tree copies what the peer itself would persist and refuses the rest by name; the volume
transfer lays out one directory per pod."""

from __future__ import annotations

import errno
import io
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8scc import archive
from k8scc.errors import K8sccError
from k8scc.transfer import INPUT, MARKER, OUTPUT, OUTPUT_ARCHIVE, VolumeTransfer
from k8scc.tree import copy_tree

PEER = "peer-org1-0123456789"

pytestmark = pytest.mark.unit


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "file.txt").write_text("top")
    (root / "sub" / "data.bin").write_bytes(bytes(range(256)))
    (root / "sub" / "deeper" / "leaf").write_text("leaf")
    tool = root / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o750)
    (root / "empty").mkdir()
    return root


@pytest.fixture
def built(source: Path, tmp_path: Path) -> Path:
    """A BUILD_OUTPUT_DIR as a build with the volume leaves it: the tree in OUTPUT."""
    root = tmp_path / "bld"
    copy_tree(source, root / OUTPUT, "build output")
    return root


def refusal(source: Path, destination: Path) -> str:
    with pytest.raises(K8sccError) as raised:
        copy_tree(source, destination, "build output")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("build output: ")
    return message


def test_copies_files_and_directories(source: Path, tmp_path: Path) -> None:
    destination = tmp_path / "copy"
    copy_tree(source, destination, "build output")
    assert (destination / "file.txt").read_text() == "top"
    assert (destination / "sub" / "data.bin").read_bytes() == bytes(range(256))
    assert (destination / "sub" / "deeper" / "leaf").read_text() == "leaf"
    assert (destination / "empty").is_dir()
    assert stat.S_IMODE((destination / "tool").stat().st_mode) & 0o700 == 0o700
    found = sorted(str(p.relative_to(destination)) for p in destination.rglob("*"))
    assert found == sorted(str(p.relative_to(source)) for p in source.rglob("*"))


def test_large_and_empty_files_are_copied_byte_for_byte(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    large = os.urandom(5 * 1024 * 1024 + 7)
    (source / "large").write_bytes(large)
    (source / "empty").write_bytes(b"")
    (source / "large").chmod(0o751)
    destination = tmp_path / "copy"
    copy_tree(source, destination, "build output")
    assert (destination / "large").read_bytes() == large
    assert (destination / "empty").read_bytes() == b""
    assert stat.S_IMODE((destination / "large").stat().st_mode) == 0o751


def test_readable_opens_the_copy_to_other_users(source: Path, tmp_path: Path) -> None:
    (source / "file.txt").chmod(0o600)
    (source / "sub").chmod(0o700)
    destination = tmp_path / "copy"
    copy_tree(source, destination, "chaincode source", readable=True)
    assert stat.S_IMODE((destination / "file.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((destination / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((destination / "tool").stat().st_mode) & 0o750 == 0o750


def test_copies_into_an_existing_directory(source: Path, tmp_path: Path) -> None:
    destination = tmp_path / "existing"
    destination.mkdir()
    copy_tree(source, destination, "build output")
    assert (destination / "file.txt").read_text() == "top"


def test_copies_relative_symlinks_inside_the_tree(source: Path, tmp_path: Path) -> None:
    (source / "link-to-file").symlink_to("file.txt")
    (source / "sub" / "up-and-over").symlink_to("../file.txt")
    (source / "link-to-dir").symlink_to("sub/deeper")
    (source / "sub" / "deeper" / "self").symlink_to(".")
    (source / "sub" / "root").symlink_to("..")
    (source / "dangling").symlink_to("not-there-yet")
    destination = tmp_path / "copy"
    copy_tree(source, destination, "build output")
    for link, target in [
        ("link-to-file", "file.txt"),
        ("sub/up-and-over", "../file.txt"),
        ("link-to-dir", "sub/deeper"),
        ("sub/deeper/self", "."),
        ("sub/root", ".."),
        ("dangling", "not-there-yet"),
    ]:
        copied = destination / link
        assert copied.is_symlink(), link
        assert os.readlink(copied) == target
    assert (destination / "link-to-file").read_text() == "top"
    assert (destination / "link-to-dir" / "leaf").read_text() == "leaf"
    # a symlinked directory is copied as a link, not walked into
    assert not (destination / "link-to-dir").resolve().is_relative_to(source)


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("escape", "../outside"),
        ("sub/escape", "../../outside"),
        ("sub/sneaky", "deeper/../../../outside"),
        ("dir-escape", ".."),
        # out of the tree and back in under its name, which the copy does not have
        ("sub/reenter", "../../source/file.txt"),
    ],
)
def test_refuses_escaping_symlinks(source: Path, tmp_path: Path, link: str, target: str) -> None:
    (tmp_path / "outside").write_text("secret")
    (source / link).symlink_to(target)
    message = refusal(source, tmp_path / "copy")
    assert f"symlink {link} points outside" in message


@pytest.mark.parametrize(
    "links",
    [
        [("d", "."), ("e", "d/..")],
        [("sub/up", ".."), ("sub/e", "up/../outside")],
        [("sub/deeper/top", "../.."), ("sub/alias", "deeper/top"), ("sub/x", "alias/../x")],
    ],
)
def test_refuses_symlinks_that_leave_the_tree_through_other_links(
    source: Path, tmp_path: Path, links: list[tuple[str, str]]
) -> None:
    """Each target looks inside when read as text; resolved, the last one leaves the tree."""
    for link, target in links:
        (source / link).symlink_to(target)
    message = refusal(source, tmp_path / "copy")
    assert message == f"build output: symlink {links[-1][0]} points outside"


def test_a_symlink_loop_stays_inside(source: Path, tmp_path: Path) -> None:
    (source / "ping").symlink_to("pong")
    (source / "pong").symlink_to("ping")
    copy_tree(source, tmp_path / "copy", "build output")
    assert os.readlink(tmp_path / "copy" / "ping") == "pong"


@pytest.mark.parametrize("inside", [True, False])
def test_refuses_absolute_symlinks(source: Path, tmp_path: Path, inside: bool) -> None:
    target = source / "file.txt" if inside else Path("/etc/hostname")
    (source / "sub" / "absolute").symlink_to(target)
    message = refusal(source, tmp_path / "copy")
    assert "symlink sub/absolute points outside" in message


@pytest.mark.parametrize("readable", [False, True])
@pytest.mark.parametrize(
    ("name", "mode", "copied", "copied_read_only"),
    [
        ("setuid", 0o4755, 0o755, 0o555),
        ("setgid", 0o2755, 0o755, 0o555),
        ("all", 0o777, 0o755, 0o555),
        ("shared", 0o666, 0o644, 0o444),
        ("owner-exec", 0o700, 0o700, 0o544),
        ("private", 0o600, 0o600, 0o444),
    ],
)
def test_file_modes_lose_special_bits_and_group_or_other_write(
    tmp_path: Path, readable: bool, name: str, mode: int, copied: int, copied_read_only: int
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / name).write_text("x")
    (source / name).chmod(mode)
    assert stat.S_IMODE((source / name).stat().st_mode) == mode
    copy_tree(source, tmp_path / "copy", "build output", readable=readable, read_only=readable)
    # What chaincode pods run is staged read-only: not even its owner, the peer, changes it.
    assert stat.S_IMODE((tmp_path / "copy" / name).stat().st_mode) == (
        copied_read_only if readable else copied
    )


@pytest.mark.parametrize("mode", [0o1777, 0o2775, 0o777])
def test_directory_modes_lose_special_bits_and_group_or_other_write(
    tmp_path: Path, mode: int
) -> None:
    source = tmp_path / "source"
    (source / "dir").mkdir(parents=True)
    (source / "dir").chmod(mode)
    copy_tree(source, tmp_path / "copy", "build output")
    assert stat.S_IMODE((tmp_path / "copy" / "dir").stat().st_mode) == 0o755


def test_refuses_a_fifo(source: Path, tmp_path: Path) -> None:
    os.mkfifo(source / "sub" / "pipe")
    message = refusal(source, tmp_path / "copy")
    assert "sub/pipe is not a regular file or directory" in message


@pytest.fixture
def unix_socket(source: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(source / "sub")  # a short relative name keeps below the sun_path limit
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind("sock")
        yield source / "sub" / "sock"
    finally:
        server.close()


def test_refuses_a_socket(source: Path, tmp_path: Path, unix_socket: Path) -> None:
    assert stat.S_ISSOCK(unix_socket.lstat().st_mode)
    message = refusal(source, tmp_path / "copy")
    assert "sub/sock is not a regular file or directory" in message


# --- VolumeTransfer ---------------------------------------------------------------------------


def test_volume_transfer_round_trip(source: Path, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    transfer = VolumeTransfer(volume, PEER)
    transfer.stage_build("ccbuild-x", source)
    staged = volume / "ccbuild-x"
    assert (staged / INPUT / "sub" / "deeper" / "leaf").read_text() == "leaf"
    assert stat.S_IMODE((staged / OUTPUT).stat().st_mode) == 0o777
    (staged / OUTPUT / "chaincode").write_text("binary")
    (staged / OUTPUT / ".machine").write_text("x86_64\n")
    collected = tmp_path / "collected"
    collected.mkdir()
    assert transfer.collect_build("ccbuild-x", collected, ".machine") == "x86_64\n"
    assert sorted(p.name for p in (collected / OUTPUT).iterdir()) == ["chaincode"]
    assert (collected / OUTPUT / "chaincode").read_text() == "binary"
    transfer.remove("ccbuild-x")
    assert not staged.exists()
    transfer.remove("ccbuild-x")  # missing is fine

    transfer.stage_run("cc-x-0a1b2c3d", collected)
    staged = volume / "cc-x-0a1b2c3d" / OUTPUT / "chaincode"
    assert staged.read_text() == "binary"
    assert stat.S_IMODE(staged.stat().st_mode) & 0o222 == 0  # read-only, for everyone
    transfer.remove("cc-x-0a1b2c3d")
    assert not staged.exists()


def test_a_launch_with_the_volume_unpacks_a_build_made_through_the_api(
    built: Path, tmp_path: Path
) -> None:
    """Back from transfer.mode api to the volume, a build kept as one archive still launches:
    its tree lands readable by the pod and read-only, like a copied one."""
    packed = io.BytesIO()
    archive.pack(built / OUTPUT, packed, "build output", 1 << 30)
    api_built = tmp_path / "api-bld"
    api_built.mkdir()
    with (api_built / OUTPUT_ARCHIVE).open("xb") as kept:
        archive.repack(io.BytesIO(packed.getvalue()), kept, "build output", 1 << 30, "")
    volume = tmp_path / "volume"
    volume.mkdir()
    VolumeTransfer(volume, PEER).stage_run("cc-x-0a1b2c3d", api_built)
    staged = volume / "cc-x-0a1b2c3d" / OUTPUT
    assert (staged / "sub" / "deeper" / "leaf").read_text() == "leaf"
    assert stat.S_IMODE((staged / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((staged / "file.txt").stat().st_mode) == 0o444
    assert stat.S_IMODE((staged / "tool").stat().st_mode) == 0o554


def test_a_launch_sweeps_only_the_earlier_launches_of_its_own_name(
    source: Path, built: Path, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    (volume / "cc-x-dead0001" / OUTPUT).mkdir(parents=True)
    (volume / "cc-xy-other").mkdir()
    (volume / "cc-x-0123456789-abcdef01").mkdir()  # a launch of another chaincode
    transfer = VolumeTransfer(volume, PEER)
    transfer.stage_run("cc-x-0a1b2c3d", built)
    assert (volume / "cc-x-0a1b2c3d" / OUTPUT / "file.txt").read_text() == "top"
    transfer.sweep("cc-x", keep="cc-x-0a1b2c3d")
    assert sorted(p.name for p in volume.iterdir()) == sorted(
        ["cc-x-0a1b2c3d", "cc-xy-other", "cc-x-0123456789-abcdef01"]
    )


def test_leftovers_are_this_peers_directories_older_than_the_age(
    source: Path, built: Path, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    ours, theirs = VolumeTransfer(volume, PEER), VolumeTransfer(volume, "peer-other-0123456789")
    ours.stage_run("cc-old-00000001", built)
    ours.stage_build("ccbuild-old", source)
    theirs.stage_run("cc-theirs-00000002", built)
    (volume / "unmarked").mkdir()
    hour_ago = time.time() - 3600
    for directory in volume.iterdir():
        marker = directory / MARKER
        if marker.exists():
            os.utime(marker, (hour_ago, hour_ago))
    ours.stage_run("cc-new-00000003", built)
    assert ours.leftovers(older_than=600) == ["cc-old-00000001", "ccbuild-old"]
    assert theirs.leftovers(older_than=600) == ["cc-theirs-00000002"]
    assert ours.leftovers(older_than=7200) == []


def test_a_directory_that_cannot_be_removed_is_reported(
    source: Path, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    transfer = VolumeTransfer(volume, PEER)
    transfer.stage_run("cc-x-0a1b2c3d", built)

    def refused(path: Path) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(shutil, "rmtree", refused)
    with pytest.raises(K8sccError) as raised:
        transfer.remove("cc-x-0a1b2c3d")
    assert str(raised.value) == (
        f"transfer directory {volume}/cc-x-0a1b2c3d not removed:"
        f" {volume}/cc-x-0a1b2c3d: Permission denied"
    )


def test_volume_transfer_needs_the_volume(source: Path, tmp_path: Path) -> None:
    with pytest.raises(K8sccError, match="transfer volume is not mounted at"):
        VolumeTransfer(tmp_path / "absent", PEER).stage_build("ccbuild-x", source)


def test_volume_transfer_refuses_bad_build_output(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    transfer = VolumeTransfer(volume, PEER)
    empty = tmp_path / "src"
    empty.mkdir()
    transfer.stage_build("ccbuild-x", empty)
    (volume / "ccbuild-x" / OUTPUT / "abs").symlink_to("/etc/passwd")
    with pytest.raises(K8sccError, match="build output: symlink abs points outside"):
        transfer.collect_build("ccbuild-x", tmp_path, ".machine")


def test_a_failed_launch_staging_says_why(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    output = tmp_path / "bld"
    (output / OUTPUT).mkdir(parents=True)
    (output / OUTPUT / "chaincode").write_text("binary")
    os.mkfifo(output / OUTPUT / "pipe")
    with pytest.raises(K8sccError, match="build output: pipe is not a regular file"):
        VolumeTransfer(volume, PEER).stage_run("cc-x-0a1b2c3d", output)


def test_a_full_volume_while_staging_a_launch_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    output = tmp_path / "bld"
    (output / OUTPUT).mkdir(parents=True)
    (output / OUTPUT / "chaincode").write_text("binary")

    def full(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "sendfile", full)
    with pytest.raises(K8sccError, match="the transfer volume is full"):
        VolumeTransfer(volume, PEER).stage_run("cc-x-0a1b2c3d", output)
