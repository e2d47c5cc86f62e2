"""Runs one pod container as real Linux processes (testbed.md §8.4).

`unshare` gives the container its own mount, pid, ipc and uts namespaces (the host network is
shared). Inside, a generated shell script builds a root from an overlay of the host userland,
mounts the volumes and drops privileges with `chroot` + `setpriv` + `env -i` before exec'ing
the command, which thereby becomes PID 1 of its pid namespace. Every mount lives in the private
mount namespace, so nothing is left on the host when the container ends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import shlex
import signal as signals
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

_log = logging.getLogger(__name__)

# The tools the setup script runs come from the host (and, after chroot, from the container's
# root, which is the host userland too).
_TOOLS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MEMORY_HIERARCHY = Path("/sys/fs/cgroup/memory")
# Host names carry the agent's pid, so a leftover can be traced to the agent that made it.
_CGROUP_PREFIX = "k8scc-testbed-"
_SCRATCH_PREFIX = "k8scc-rt-"
# Characters that overlayfs reads as separators or escapes in its mount options.
_OVERLAY_SPECIAL = frozenset(",:\\")
_CGROUP_REMOVE_TIMEOUT = 5.0
# util-linux 2.38 unshare cannot re-raise SIGKILL (signal(SIGKILL, SIG_DFL) fails): when its child
# died of SIGKILL (kill(), OOM killer) it prints this as its last line and exits 1 instead.
_UNSHARE_SIGKILL_REPORT = b"unshare: sigprocmask unblock failed: Invalid argument"


@dataclass(frozen=True)
class Mount:
    target: str  # absolute path inside the container
    source: Path  # host path (directory or regular file)
    read_only: bool


@dataclass(frozen=True)
class ContainerSpec:
    argv: list[str]  # command + args, already expanded; argv[0] is looked up via PATH from env
    env: dict[str, str]  # the complete environment of the process
    working_dir: str | None
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups (fsGroup, supplementalGroups)
    mounts: tuple[Mount, ...]
    read_only_root: bool
    memory_limit: int | None  # bytes
    image_dir: Path | None  # optional overlay layered over the host userland


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    oom_killed: bool
    signal: int | None  # signal that ended the container's init, if any


class Container:
    """One container run. `on_output(stream, line)` is called from reader threads for every
    line of "stdout" and "stderr" (without its newline; a final partial line is delivered too)."""

    def __init__(self, spec: ContainerSpec, on_output: Callable[[str, bytes], None]) -> None:
        _validate(spec)
        self._spec = spec
        self._on_output = on_output
        self._proc: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []
        self._cgroup: Path | None = None
        self._scratch: Path | None = None
        self._status: ExitStatus | None = None
        self._status_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._init_sigkilled = False
        self._closed = False

    def start(self) -> None:
        if self._proc is not None or self._closed:
            raise RuntimeError("container already started")
        try:
            # An empty host directory only serves as the mountpoint of the scratch tmpfs, which
            # exists in the container's mount namespace alone.
            self._scratch = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-"))
            _check_overlay_path(self._scratch)
            if self._spec.memory_limit is not None:
                self._cgroup = _create_memory_cgroup(self._spec.memory_limit)
            script = _setup_script(self._spec, self._scratch, self._cgroup)
            payload = [f"{name}={value}" for name, value in self._spec.env.items()]
            payload += self._spec.argv
            self._proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--pid",
                    "--fork",
                    "--ipc",
                    "--uts",
                    "--kill-child",
                    "/bin/sh",
                    "-c",
                    script,
                    "k8scc-container",
                    *payload,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": _TOOLS_PATH},
                start_new_session=True,
            )
        except BaseException:
            self._remove_leftovers()
            raise
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        for name, pipe in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            reader = threading.Thread(
                target=self._pump, args=(name, pipe), name=f"container-{name}", daemon=True
            )
            reader.start()
            self._readers.append(reader)

    @property
    def pid(self) -> int | None:
        """Host pid of the `unshare` process, which leads the container's process group."""
        return None if self._proc is None else self._proc.pid

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """Exit status once the container has ended and all its output was delivered; None when
        `timeout` seconds pass first."""
        proc = self._started()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for reader in self._readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                return None
        with self._status_lock:
            if self._status is None:
                self._status = self._exit_status(returncode)
            return self._status

    def signal(self, sig: int) -> None:
        """Delivers `sig` to the container's init. `unshare` blocks SIGTERM and forwards nothing,
        so the init is signalled directly; as PID 1 of its namespace it only gets signals it
        handles (plus SIGKILL), as in a real pod."""
        proc = self._started()
        while proc.poll() is None:
            if self._signal_init(proc.pid, sig):
                return
            # Right after start the init may not be forked yet.
            time.sleep(0.001)

    def kill(self) -> None:
        """SIGKILLs the container; the pid namespace takes all its processes down with the init."""
        proc = self._started()
        if proc.returncode is not None:
            return
        # The init is killed, not unshare: unshare must live on to reap it, or the init's zombie
        # would be handed to a subreaper that may never reap it. Killing the init also reaches
        # one that left the process group (setsid).
        if self._signal_init(proc.pid, signals.SIGKILL):
            return
        # No init yet (or any more): only unshare is in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signals.SIGKILL)

    def close(self) -> None:
        """Kills the container if it still runs, waits for it and removes what it used on the
        host. Idempotent, and safe to call from several threads at once."""
        with self._close_lock:
            if self._closed:
                return
            if self._proc is not None:
                if self._proc.poll() is None:
                    self.kill()
                self.wait()
            self._remove_leftovers()
            self._closed = True

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("container not started")
        return self._proc

    def _signal_init(self, unshare_pid: int, sig: int) -> bool:
        for init in _children(unshare_pid):
            try:
                pidfd = os.pidfd_open(init)
            except ProcessLookupError:
                continue
            try:
                # Re-checked through the pidfd so that a recycled pid is never signalled.
                if init in _children(unshare_pid):
                    signals.pidfd_send_signal(pidfd, sig)
                    return True
            finally:
                os.close(pidfd)
        return False

    def _pump(self, stream: str, pipe: IO[bytes]) -> None:
        held: bytes | None = None
        with pipe:
            for raw in iter(pipe.readline, b""):
                if held is not None:
                    self._deliver(stream, held)
                    held = None
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if stream == "stderr" and line == _UNSHARE_SIGKILL_REPORT:
                    held = line
                else:
                    self._deliver(stream, line)
        if held is not None:
            # EOF on stderr: unshare has exited, so its exit code tells whose line it was.
            if self._started().wait() == 1:
                self._init_sigkilled = True
            else:
                self._deliver(stream, held)

    def _deliver(self, stream: str, line: bytes) -> None:
        try:
            self._on_output(stream, line)
        except Exception:
            # The pipe must keep draining, or the container blocks on a full pipe.
            _log.exception("on_output failed for a %s line", stream)

    def _exit_status(self, returncode: int) -> ExitStatus:
        oom_killed = self._cgroup is not None and _oom_kills(self._cgroup) > 0
        if self._init_sigkilled:
            return ExitStatus(exit_code=137, oom_killed=oom_killed, signal=signals.SIGKILL)
        if returncode < 0:
            # unshare re-raises the signal that ended its child (or was itself killed).
            return ExitStatus(exit_code=128 - returncode, oom_killed=oom_killed, signal=-returncode)
        return ExitStatus(exit_code=returncode, oom_killed=oom_killed, signal=None)

    def _remove_leftovers(self) -> None:
        if self._cgroup is not None:
            _remove_cgroup(self._cgroup)
            self._cgroup = None
        if self._scratch is not None:
            self._scratch.rmdir()
            self._scratch = None


def _validate(spec: ContainerSpec) -> None:
    if not spec.argv:
        raise ValueError("argv is empty")
    if "=" in spec.argv[0]:
        # env(1) would take it for one more variable assignment.
        raise ValueError(f"argv[0] contains '=': {spec.argv[0]!r}")
    for name in spec.env:
        if not name or "=" in name:
            raise ValueError(f"invalid environment variable name {name!r}")
    for mount in spec.mounts:
        if not mount.source.is_absolute():
            raise ValueError(f"mount source must be absolute: {mount.source}")
        if (
            not mount.target.startswith("/")
            or mount.target == "/"
            or posixpath.normpath(mount.target) != mount.target
        ):
            raise ValueError(f"mount target must be a normalized absolute path: {mount.target!r}")
    if spec.working_dir is not None and not spec.working_dir.startswith("/"):
        raise ValueError(f"working_dir must be absolute: {spec.working_dir!r}")
    if min((spec.uid, spec.gid, *spec.groups)) < 0:
        raise ValueError("uid, gid and groups must not be negative")
    if spec.memory_limit is not None and spec.memory_limit <= 0:
        raise ValueError(f"memory_limit must be positive: {spec.memory_limit}")
    if spec.image_dir is not None:
        if not spec.image_dir.is_absolute():
            raise ValueError(f"image_dir must be absolute: {spec.image_dir}")
        _check_overlay_path(spec.image_dir)


def _check_overlay_path(path: Path) -> None:
    if _OVERLAY_SPECIAL.intersection(str(path)):
        raise ValueError(f"path unusable in overlayfs options: {path}")


def _setup_script(spec: ContainerSpec, scratch: Path, cgroup: Path | None) -> str:
    """The script that runs as the pid namespace's init, receiving the environment assignments
    followed by argv as its positional parameters (so no size limit of one argument applies)."""

    def q(value: object) -> str:
        return shlex.quote(str(value))

    root = scratch / "root"

    def inside(path: str) -> str:
        return q(f"{root}{path}")

    # runc's default; the caller's umask must not leak in.
    lines = ["set -e", "umask 022"]
    if cgroup is not None:
        # "0" moves the writing shell. unshare itself stays outside, so an OOM kill cannot hit
        # the process that reports the exit status.
        lines.append(f"echo 0 > {q(cgroup / 'cgroup.procs')}")
    lines += [
        f"mount -t tmpfs -o mode=0700 k8scc-scratch {q(scratch)}",
        f"mkdir {q(scratch / 'upper')} {q(scratch / 'work')} {q(root)}",
    ]
    if spec.image_dir is None:
        lower = "/"
    else:
        # overlayfs refuses a lower layer nested inside another lower layer on the same
        # filesystem ("overlapping lowerdir path"), so the host root is wrapped in a read-only
        # overlay of its own first (a lower-only overlay needs two layers, hence `empty`).
        base, empty = scratch / "base", scratch / "empty"
        lines += [
            f"mkdir {q(base)} {q(empty)}",
            f"mount -t overlay -o {q(f'ro,lowerdir=/:{empty}')} overlay {q(base)}",
        ]
        lower = f"{spec.image_dir}:{base}"
    options = f"lowerdir={lower},upperdir={scratch / 'upper'},workdir={scratch / 'work'}"
    lines += [
        f"mount -t overlay -o {q(options)} overlay {q(root)}",
        f"mount -t proc -o nosuid,nodev,noexec proc {inside('/proc')}",
        f"mount --rbind /dev {inside('/dev')}",
        f"mount --rbind /sys {inside('/sys')}",
        f"mount -o remount,bind,ro {inside('/sys')}",
    ]
    # The host's /dev/shm, which came with /dev, would otherwise be shared with the host and
    # every other container.
    for temp_dir in ("/dev/shm", "/tmp"):
        lines.append(f"mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {inside(temp_dir)}")
    # Parents first, so that a volume nested in another one lands on top of it.
    for mount in sorted(spec.mounts, key=lambda m: len(PurePosixPath(m.target).parts)):
        # Mountpoints are created from inside the chroot: an absolute symlink in the image then
        # cannot lead the creation onto the host's real filesystem.
        if mount.source.is_dir():
            lines.append(f"chroot {q(root)} mkdir -p -- {q(mount.target)}")
        else:
            parent = posixpath.dirname(mount.target)
            lines += [
                f"chroot {q(root)} mkdir -p -- {q(parent)}",
                f"chroot {q(root)} touch -- {q(mount.target)}",
            ]
        lines.append(f"mount --bind {q(mount.source)} {inside(mount.target)}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {inside(mount.target)}")
    if spec.working_dir is not None:
        lines.append(f"chroot {q(root)} mkdir -p -- {q(spec.working_dir)}")
    if spec.read_only_root:
        lines.append(f"mount -o remount,bind,ro {q(root)}")
    groups = (
        f"--groups={','.join(str(g) for g in spec.groups)}" if spec.groups else "--clear-groups"
    )
    cwd = "" if spec.working_dir is None else f" -C {q(spec.working_dir)}"
    lines.append(
        f"exec chroot {q(root)} setpriv --reuid={spec.uid} --regid={spec.gid} {groups}"
        " --no-new-privs --inh-caps=-all --bounding-set=-all"
        f' env -i{cwd} -- "$@"'
    )
    return "\n".join(lines) + "\n"


def _own_memory_cgroup() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return _MEMORY_HIERARCHY / path.lstrip("/")
    raise RuntimeError("no cgroup v1 memory controller in /proc/self/cgroup")


def _create_memory_cgroup(limit: int) -> Path:
    cgroup = _own_memory_cgroup() / f"{_CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    cgroup.mkdir()
    try:
        (cgroup / "memory.limit_in_bytes").write_text(str(limit))
    except BaseException:
        cgroup.rmdir()
        raise
    return cgroup


def _oom_kills(cgroup: Path) -> int:
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    raise RuntimeError(f"no oom_kill counter in {cgroup}/memory.oom_control")


def _remove_cgroup(cgroup: Path) -> None:
    # rmdir fails with EBUSY while the kernel still counts a task in the cgroup; that count is
    # not guaranteed to drop before unshare's exit status arrives.
    deadline = time.monotonic() + _CGROUP_REMOVE_TIMEOUT
    while True:
        try:
            cgroup.rmdir()
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(child) for child in text.split()]
