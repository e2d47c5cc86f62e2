"""Runs real containers through testbed.runtime (needs root, util-linux and cgroup v1 memory)."""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.runtime import Container, ContainerSpec, ExitStatus, Mount

pytestmark = [pytest.mark.cluster]

BASE = ContainerSpec(
    argv=["true"],
    env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    working_dir=None,
    uid=65532,
    gid=65532,
    groups=(),
    mounts=(),
    read_only_root=False,
    memory_limit=None,
    image_dir=None,
)


def spec(argv: list[str], **changes: Any) -> ContainerSpec:
    return dataclasses.replace(BASE, argv=argv, **changes)


def sh(script: str, **changes: Any) -> ContainerSpec:
    return spec(["sh", "-c", script], **changes)


class Output:
    def __init__(self) -> None:
        self.lines: list[tuple[str, bytes]] = []
        self._changed = threading.Condition()

    def __call__(self, stream: str, line: bytes) -> None:
        with self._changed:
            self.lines.append((stream, line))
            self._changed.notify_all()

    def text(self, stream: str) -> list[str]:
        with self._changed:
            return [line.decode() for name, line in self.lines if name == stream]

    def wait_for(self, stream: str, line: str, timeout: float = 10.0) -> None:
        with self._changed:
            seen = self._changed.wait_for(lambda: line in self.text(stream), timeout)
        assert seen, f"{line!r} not seen on {stream}: {self.lines}"


@dataclasses.dataclass(frozen=True)
class HostState:
    mountinfo: tuple[str, ...]
    # Only this process's: other agents may run containers on the same machine meanwhile.
    cgroup_dirs: frozenset[Path]
    scratch_dirs: frozenset[Path]
    # pid -> (ppid, process group, session)
    processes: dict[int, tuple[int, int, int]]


def own_memory_cgroup() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    raise AssertionError("no memory cgroup")


def host_state() -> HostState:
    processes: dict[int, tuple[int, int, int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid, pgid, sid = (int(field) for field in stat.rpartition(")")[2].split()[1:4])
        processes[int(proc.name)] = (ppid, pgid, sid)
    mine = f"*-{os.getpid()}-*"
    return HostState(
        mountinfo=tuple(sorted(Path("/proc/self/mountinfo").read_text().splitlines())),
        cgroup_dirs=frozenset(own_memory_cgroup().glob(f"k8scc-testbed{mine}")),
        scratch_dirs=frozenset(Path(tempfile.gettempdir()).glob(f"k8scc-rt{mine}")),
        processes=processes,
    )


class Containers:
    def __init__(self) -> None:
        self.created: list[Container] = []

    def create(
        self, spec: ContainerSpec, on_output: Callable[[str, bytes], None] | None = None
    ) -> tuple[Container, Output]:
        output = Output()
        container = Container(spec, on_output or output)
        self.created.append(container)
        return container, output

    def start(self, spec: ContainerSpec) -> tuple[Container, Output]:
        container, output = self.create(spec)
        container.start()
        return container, output

    def run(self, spec: ContainerSpec) -> tuple[ExitStatus, Output]:
        container, output = self.start(spec)
        status = container.wait(timeout=20)
        assert status is not None, f"container still running: {output.lines}"
        return status, output


@pytest.fixture
def containers() -> Iterator[Containers]:
    """Closes every container of the test, then checks that none left anything on the host."""
    before = host_state()
    created = Containers()
    yield created
    for container in created.created:
        container.close()
    after = host_state()
    assert after.mountinfo == before.mountinfo
    assert after.cgroup_dirs <= before.cgroup_dirs
    assert after.scratch_dirs <= before.scratch_dirs
    assert {pid for pid, (ppid, _, _) in after.processes.items() if ppid == os.getpid()} <= set(
        before.processes
    )
    # Container processes keep the session of the unshare process unless they call setsid.
    sessions = {c.pid for c in created.created if c.pid is not None}
    assert [pid for pid, (_, _, sid) in after.processes.items() if sid in sessions] == []


def init_pid(container: Container, comm: str) -> int:
    """Host pid of the container's init once it runs `comm`."""
    assert container.pid is not None
    children = Path(f"/proc/{container.pid}/task/{container.pid}/children")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in children.read_text().split():
            if Path(f"/proc/{child}/comm").read_text().strip() == comm:
                return int(child)
        time.sleep(0.01)
    raise AssertionError(f"init never ran {comm}")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("argv", "code"), [(["true"], 0), (["false"], 1), (["sh", "-c", "exit 7"], 7)]
)
def test_exit_code(containers: Containers, argv: list[str], code: int) -> None:
    status, _ = containers.run(spec(argv))
    assert status == ExitStatus(exit_code=code, oom_killed=False, signal=None)


@pytest.mark.timeout(30)
def test_output_lines_in_order(containers: Containers) -> None:
    status, output = containers.run(
        sh(
            r"echo one; echo err1 >&2; echo two; printf '\377raw\n'; seq 1 3000; echo err2 >&2;"
            r" printf tail"
        )
    )
    assert status.exit_code == 0
    stdout = [line for stream, line in output.lines if stream == "stdout"]
    expected = [b"one", b"two", b"\xffraw", *(str(n).encode() for n in range(1, 3001)), b"tail"]
    assert stdout == expected
    assert output.text("stderr") == ["err1", "err2"]


@pytest.mark.timeout(30)
def test_read_only_and_writable_volumes(containers: Containers, tmp_path: Path) -> None:
    source, target = tmp_path / "input", tmp_path / "output"
    source.mkdir()
    target.mkdir()
    source.chmod(0o777)  # so only the read-only mount can refuse the write
    (source / "in.txt").write_text("input data\n")
    os.chown(target, 65532, 65532)
    status, output = containers.run(
        sh(
            "cat /chaincode/input/in.txt\n"
            "echo built > /chaincode/output/out.txt\n"
            "if echo x > /chaincode/input/new.txt; then echo wrote-input; fi\n",
            mounts=(
                Mount("/chaincode/input", source, read_only=True),
                Mount("/chaincode/output", target, read_only=False),
            ),
        )
    )
    assert status.exit_code == 0
    assert output.text("stdout") == ["input data"]
    assert "Read-only file system" in "\n".join(output.text("stderr"))
    assert (target / "out.txt").read_text() == "built\n"
    assert (target / "out.txt").stat().st_uid == 65532
    assert sorted(p.name for p in source.iterdir()) == ["in.txt"]


@pytest.mark.timeout(30)
def test_file_volumes(containers: Containers, tmp_path: Path) -> None:
    config, log = tmp_path / "app.conf", tmp_path / "app.log"
    config.write_text("key=value\n")
    log.write_text("first\n")
    log.chmod(0o666)
    status, output = containers.run(
        sh(
            "cat /etc/k8scc-test/app.conf && echo second >> /var/log/k8scc-test/app.log",
            mounts=(
                Mount("/etc/k8scc-test/app.conf", config, read_only=True),
                Mount("/var/log/k8scc-test/app.log", log, read_only=False),
            ),
        )
    )
    assert status.exit_code == 0, output.lines
    assert output.text("stdout") == ["key=value"]
    assert log.read_text() == "first\nsecond\n"
    assert not Path("/etc/k8scc-test").exists()
    assert not Path("/var/log/k8scc-test").exists()


@pytest.mark.timeout(30)
def test_nested_volumes_mount_parent_first(containers: Containers, tmp_path: Path) -> None:
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    (outer / "sub").mkdir(parents=True)
    inner.mkdir()
    (outer / "o.txt").write_text("outer\n")
    (inner / "i.txt").write_text("inner\n")
    status, output = containers.run(
        sh(
            "cat /data/o.txt /data/sub/i.txt",
            mounts=(
                Mount("/data/sub", inner, read_only=True),
                Mount("/data", outer, read_only=True),
            ),
        )
    )
    assert status.exit_code == 0, output.lines
    assert output.text("stdout") == ["outer", "inner"]


@pytest.mark.timeout(30)
def test_read_only_root(containers: Containers) -> None:
    status, output = containers.run(
        sh(
            "touch /etc/k8scc-rofs-probe; touch /tmp/probe && echo tmp-ok",
            uid=0,
            gid=0,
            read_only_root=True,
        )
    )
    assert status.exit_code == 0
    assert output.text("stdout") == ["tmp-ok"]
    assert output.text("stderr") == [
        "touch: cannot touch '/etc/k8scc-rofs-probe': Read-only file system"
    ]


@pytest.mark.timeout(30)
def test_writable_root_stays_in_the_container(containers: Containers) -> None:
    status, output = containers.run(
        sh("echo inside > /etc/k8scc-rw-probe && cat /etc/k8scc-rw-probe", uid=0, gid=0)
    )
    assert status.exit_code == 0
    assert output.text("stdout") == ["inside"]
    assert not Path("/etc/k8scc-rw-probe").exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("groups", "expected"), [((2000, 3000), "65533 2000 3000"), ((), "65533")])
def test_identity(containers: Containers, groups: tuple[int, ...], expected: str) -> None:
    # Supplementary groups of the agent must not leak into the container.
    agent_groups = os.getgroups()
    os.setgroups([4242])
    try:
        status, output = containers.run(
            sh("id -u; id -g; id -G", uid=65532, gid=65533, groups=groups)
        )
    finally:
        os.setgroups(agent_groups)
    assert status.exit_code == 0
    assert output.text("stdout") == ["65532", "65533", expected]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("uid", [0, 65532])
def test_no_capabilities_and_no_new_privileges(containers: Containers, uid: int) -> None:
    status, output = containers.run(sh("cat /proc/self/status", uid=uid, gid=uid))
    assert status.exit_code == 0
    fields = dict(line.split(":\t", 1) for line in output.text("stdout") if ":\t" in line)
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[caps], 16) == 0, caps
    assert fields["NoNewPrivs"] == "1"


@pytest.mark.timeout(30)
def test_own_pid_namespace(containers: Containers) -> None:
    # Builtins only, so the shell is the only process there is.
    status, output = containers.run(sh("echo $$; for p in /proc/[0-9]*; do echo ${p#/proc/}; done"))
    assert status.exit_code == 0
    assert output.text("stdout") == ["1", "1"]


@pytest.mark.timeout(30)
def test_environment_is_exactly_the_given_one(
    containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K8SCC_LEAK_PROBE", "leak")
    env = {
        "PATH": "/usr/bin:/bin",
        "GREETING": "hello world",
        "TRICKY": 'it\'s $HOME; `id` "q" \\',
        "EMPTY": "",
    }
    status, output = containers.run(spec(["env"], env=env))
    assert status.exit_code == 0
    assert sorted(output.text("stdout")) == sorted(f"{k}={v}" for k, v in env.items())


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("working_dir", "expected"),
    [(None, "/"), ("/usr/share", "/usr/share"), ("/srv/k8scc/new", "/srv/k8scc/new")],
)
def test_working_dir(containers: Containers, working_dir: str | None, expected: str) -> None:
    status, output = containers.run(spec(["pwd"], working_dir=working_dir))
    assert status.exit_code == 0, output.lines
    assert output.text("stdout") == [expected]
    assert not Path("/srv/k8scc").exists()


@pytest.mark.timeout(30)
def test_sigterm_runs_the_trap(containers: Containers) -> None:
    container, output = containers.start(
        sh("trap 'echo terminating; exit 42' TERM; echo ready; while :; do sleep 0.05; done")
    )
    output.wait_for("stdout", "ready")
    container.signal(signal.SIGTERM)
    assert container.wait(timeout=10) == ExitStatus(exit_code=42, oom_killed=False, signal=None)
    assert output.text("stdout") == ["ready", "terminating"]


@pytest.mark.timeout(30)
def test_pid1_ignores_sigterm_until_killed(containers: Containers) -> None:
    container, _ = containers.start(spec(["sleep", "1000"]))
    init_pid(container, "sleep")
    container.signal(signal.SIGTERM)
    assert container.wait(timeout=1) is None
    container.kill()
    assert container.wait(timeout=10) == ExitStatus(
        exit_code=137, oom_killed=False, signal=signal.SIGKILL
    )


@pytest.mark.timeout(30)
def test_kill_reaches_an_init_outside_the_process_group(containers: Containers) -> None:
    container, _ = containers.start(spec(["setsid", "sleep", "1000"]))
    pid = init_pid(container, "sleep")
    assert os.getpgid(pid) != container.pid
    container.kill()
    assert container.wait(timeout=10) == ExitStatus(
        exit_code=137, oom_killed=False, signal=signal.SIGKILL
    )
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.timeout(30)
def test_death_by_a_fault_signal(containers: Containers) -> None:
    # unshare re-raises the SIGSEGV on itself; no core file may land in the working directory.
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    try:
        status, _ = containers.run(spec(["python3", "-c", "import ctypes; ctypes.string_at(0)"]))
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    assert status == ExitStatus(exit_code=139, oom_killed=False, signal=signal.SIGSEGV)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("megabytes", "oom"), [(200, True), (10, False)])
def test_memory_limit(containers: Containers, megabytes: int, oom: bool) -> None:
    status, output = containers.run(
        spec(
            ["python3", "-c", f"x = b'a' * ({megabytes} << 20); print('survived')"],
            memory_limit=50 << 20,
        )
    )
    if oom:
        assert status == ExitStatus(exit_code=137, oom_killed=True, signal=signal.SIGKILL)
        assert output.text("stdout") == []
    else:
        assert status == ExitStatus(exit_code=0, oom_killed=False, signal=None)
        assert output.text("stdout") == ["survived"]


@pytest.mark.timeout(30)
def test_image_dir_is_layered_over_the_host(containers: Containers, tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "opt" / "k8scc-image").mkdir(parents=True)
    (image / "opt" / "k8scc-image" / "hello.txt").write_text("from the image\n")
    (image / "usr" / "local" / "bin").mkdir(parents=True)
    tool = image / "usr" / "local" / "bin" / "k8scc-image-tool"
    tool.write_text("#!/bin/sh\necho image tool\n")
    tool.chmod(0o755)
    (image / "etc").mkdir()
    (image / "etc" / "hostname").write_text("image-hostname\n")
    status, output = containers.run(
        sh(
            "cat /opt/k8scc-image/hello.txt; k8scc-image-tool; cat /etc/hostname;"
            " test -x /usr/bin/python3 && echo host-python",
            image_dir=image,
        )
    )
    assert status.exit_code == 0, output.lines
    assert output.text("stdout") == [
        "from the image",
        "image tool",
        "image-hostname",
        "host-python",
    ]
    assert not Path("/opt/k8scc-image").exists()


@pytest.mark.timeout(30)
def test_missing_executable(containers: Containers) -> None:
    status, output = containers.run(spec(["k8scc-no-such-command"]))
    assert status == ExitStatus(exit_code=127, oom_killed=False, signal=None)
    assert output.text("stderr") == ["env: 'k8scc-no-such-command': No such file or directory"]


@pytest.mark.timeout(30)
def test_setup_failure_is_reported(containers: Containers, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    status, output = containers.run(
        dataclasses.replace(BASE, mounts=(Mount("/data", missing, False),))
    )
    assert status.exit_code != 0
    assert status.signal is None
    assert str(missing) in "\n".join(output.text("stderr"))


@pytest.mark.timeout(30)
def test_host_network_is_shared(containers: Containers) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(20)
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port})).sendall(b'hi')"
        status, output = containers.run(spec(["python3", "-c", connect]))
        assert status.exit_code == 0, output.lines
        connection, _ = server.accept()
        with connection:
            assert connection.recv(16) == b"hi"


@pytest.mark.timeout(30)
def test_output_callback_failure_does_not_stop_draining(
    containers: Containers, caplog: pytest.LogCaptureFixture
) -> None:
    delivered: list[bytes] = []

    def fragile(stream: str, line: bytes) -> None:
        if line == b"boom":
            raise RuntimeError("callback failed")
        delivered.append(line)

    container, _ = containers.create(sh("echo boom; seq 1 2000"), fragile)
    with caplog.at_level(logging.ERROR, logger="testbed.runtime"):
        container.start()
        status = container.wait(timeout=20)
    assert status is not None
    assert status.exit_code == 0
    assert delivered == [str(n).encode() for n in range(1, 2001)]
    assert "on_output failed" in caplog.text


@pytest.mark.timeout(30)
def test_wait_timeout_and_close_of_a_running_container(containers: Containers) -> None:
    container, _ = containers.create(spec(["sleep", "1000"]))
    assert container.pid is None
    with pytest.raises(RuntimeError):
        container.wait()
    container.start()
    assert container.pid is not None
    assert container.wait(timeout=0.2) is None
    container.close()
    container.close()
    assert container.wait(timeout=0) == ExitStatus(
        exit_code=137, oom_killed=False, signal=signal.SIGKILL
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "invalid",
    [
        dataclasses.replace(BASE, argv=[]),
        dataclasses.replace(BASE, argv=["A=b"]),
        dataclasses.replace(BASE, env={"A=B": "c"}),
        dataclasses.replace(BASE, mounts=(Mount("data", Path("/srv"), False),)),
        dataclasses.replace(BASE, mounts=(Mount("/data/../etc", Path("/srv"), False),)),
        dataclasses.replace(BASE, mounts=(Mount("/data", Path("srv"), False),)),
        dataclasses.replace(BASE, working_dir="relative"),
        dataclasses.replace(BASE, image_dir=Path("/srv/a,b")),
        dataclasses.replace(BASE, memory_limit=0),
    ],
)
def test_invalid_specs_are_refused(invalid: ContainerSpec) -> None:
    with pytest.raises(ValueError):
        Container(invalid, Output())
