"""Runs real containers through testbed.runtime (needs root, util-linux and cgroup v1 memory)."""

from __future__ import annotations

import dataclasses
import logging
import os
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
    cgroup_dirs: frozenset[str]
    scratch_dirs: frozenset[str]
    pid_namespaces: frozenset[str]
    child_pids: frozenset[int]


def own_memory_cgroup() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    raise AssertionError("no memory cgroup")


def host_state() -> HostState:
    namespaces: set[str] = set()
    children: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            namespaces.add(os.readlink(proc / "ns" / "pid"))
            stat = (proc / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            # Gone meanwhile, or a protected process of the machine (not ours).
            continue
        if int(stat.rpartition(")")[2].split()[1]) == os.getpid():
            children.add(int(proc.name))
    return HostState(
        mountinfo=tuple(sorted(Path("/proc/self/mountinfo").read_text().splitlines())),
        cgroup_dirs=frozenset(p.name for p in own_memory_cgroup().glob("k8scc-testbed-*")),
        scratch_dirs=frozenset(p.name for p in Path(tempfile.gettempdir()).glob("k8scc-rt-*")),
        pid_namespaces=frozenset(namespaces),
        child_pids=frozenset(children),
    )


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    before = host_state()
    yield
    after = host_state()
    assert after.mountinfo == before.mountinfo
    assert after.cgroup_dirs <= before.cgroup_dirs
    assert after.scratch_dirs <= before.scratch_dirs
    assert after.pid_namespaces <= before.pid_namespaces
    assert after.child_pids <= before.child_pids


Start = Callable[[ContainerSpec], tuple[Container, Output]]


@pytest.fixture
def start(no_leftovers: None) -> Iterator[Start]:
    created: list[Container] = []

    def start_container(spec: ContainerSpec) -> tuple[Container, Output]:
        output = Output()
        container = Container(spec, output)
        created.append(container)
        container.start()
        return container, output

    yield start_container
    for container in created:
        container.close()


@pytest.fixture
def run(start: Start) -> Callable[[ContainerSpec], tuple[ExitStatus, Output]]:
    def run_container(spec: ContainerSpec) -> tuple[ExitStatus, Output]:
        container, output = start(spec)
        status = container.wait(timeout=20)
        assert status is not None, f"container still running: {output.lines}"
        return status, output

    return run_container


Run = Callable[[ContainerSpec], tuple[ExitStatus, Output]]


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
def test_exit_code(run: Run, argv: list[str], code: int) -> None:
    status, _ = run(spec(argv))
    assert status == ExitStatus(exit_code=code, oom_killed=False, signal=None)


@pytest.mark.timeout(30)
def test_output_lines_in_order(run: Run) -> None:
    status, output = run(
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
def test_read_only_and_writable_volumes(run: Run, tmp_path: Path) -> None:
    source, target = tmp_path / "input", tmp_path / "output"
    source.mkdir(mode=0o777)
    target.mkdir()
    source.chmod(0o777)  # so only the read-only mount can refuse the write
    (source / "in.txt").write_text("input data\n")
    os.chown(target, 65532, 65532)
    status, output = run(
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
def test_file_volumes(run: Run, tmp_path: Path) -> None:
    config, log = tmp_path / "app.conf", tmp_path / "app.log"
    config.write_text("key=value\n")
    log.write_text("first\n")
    log.chmod(0o666)
    status, output = run(
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
def test_nested_volumes_mount_parent_first(run: Run, tmp_path: Path) -> None:
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    (outer / "sub").mkdir(parents=True)
    inner.mkdir()
    (outer / "o.txt").write_text("outer\n")
    (inner / "i.txt").write_text("inner\n")
    status, output = run(
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
def test_read_only_root(run: Run) -> None:
    status, output = run(
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
def test_writable_root_stays_in_the_container(run: Run) -> None:
    status, output = run(
        sh("echo inside > /etc/k8scc-rw-probe && cat /etc/k8scc-rw-probe", uid=0, gid=0)
    )
    assert status.exit_code == 0
    assert output.text("stdout") == ["inside"]
    assert not Path("/etc/k8scc-rw-probe").exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("groups", "expected"), [((2000, 3000), "65533 2000 3000"), ((), "65533")])
def test_identity(run: Run, groups: tuple[int, ...], expected: str) -> None:
    # Supplementary groups of the agent must not leak into the container.
    agent_groups = os.getgroups()
    os.setgroups([4242])
    try:
        status, output = run(sh("id -u; id -g; id -G", uid=65532, gid=65533, groups=groups))
    finally:
        os.setgroups(agent_groups)
    assert status.exit_code == 0
    assert output.text("stdout") == ["65532", "65533", expected]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("uid", [0, 65532])
def test_no_capabilities_and_no_new_privileges(run: Run, uid: int) -> None:
    status, output = run(sh("cat /proc/self/status", uid=uid, gid=uid))
    assert status.exit_code == 0
    fields = dict(line.split(":\t", 1) for line in output.text("stdout") if ":\t" in line)
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[caps], 16) == 0, caps
    assert fields["NoNewPrivs"] == "1"


@pytest.mark.timeout(30)
def test_own_pid_namespace(run: Run) -> None:
    # Builtins only, so the shell is the only process there is.
    status, output = run(sh("echo $$; for p in /proc/[0-9]*; do echo ${p#/proc/}; done"))
    assert status.exit_code == 0
    assert output.text("stdout") == ["1", "1"]


@pytest.mark.timeout(30)
def test_environment_is_exactly_the_given_one(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8SCC_LEAK_PROBE", "leak")
    env = {
        "PATH": "/usr/bin:/bin",
        "GREETING": "hello world",
        "TRICKY": 'it\'s $HOME; `id` "q" \\',
        "EMPTY": "",
    }
    status, output = run(spec(["env"], env=env))
    assert status.exit_code == 0
    assert sorted(output.text("stdout")) == sorted(f"{k}={v}" for k, v in env.items())


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("working_dir", "expected"),
    [(None, "/"), ("/usr/share", "/usr/share"), ("/srv/k8scc/new", "/srv/k8scc/new")],
)
def test_working_dir(run: Run, working_dir: str | None, expected: str) -> None:
    status, output = run(spec(["pwd"], working_dir=working_dir))
    assert status.exit_code == 0, output.lines
    assert output.text("stdout") == [expected]
    assert not Path("/srv/k8scc").exists()


@pytest.mark.timeout(30)
def test_sigterm_runs_the_trap(start: Start) -> None:
    container, output = start(
        sh("trap 'echo terminating; exit 42' TERM; echo ready; while :; do sleep 0.05; done")
    )
    output.wait_for("stdout", "ready")
    container.signal(signal.SIGTERM)
    assert container.wait(timeout=10) == ExitStatus(exit_code=42, oom_killed=False, signal=None)
    assert output.text("stdout") == ["ready", "terminating"]


@pytest.mark.timeout(30)
def test_pid1_ignores_sigterm_until_killed(start: Start) -> None:
    container, _ = start(spec(["sleep", "1000"]))
    init_pid(container, "sleep")
    container.signal(signal.SIGTERM)
    assert container.wait(timeout=1) is None
    container.kill()
    assert container.wait(timeout=10) == ExitStatus(
        exit_code=137, oom_killed=False, signal=signal.SIGKILL
    )


@pytest.mark.timeout(30)
def test_kill_reaches_an_init_outside_the_process_group(start: Start) -> None:
    container, _ = start(spec(["setsid", "sleep", "1000"]))
    pid = init_pid(container, "sleep")
    assert os.getpgid(pid) != container.pid
    container.kill()
    status = container.wait(timeout=10)
    assert status is not None
    assert status.exit_code == 137
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("megabytes", "oom"), [(200, True), (10, False)])
def test_memory_limit(run: Run, megabytes: int, oom: bool) -> None:
    status, output = run(
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
def test_image_dir_is_layered_over_the_host(run: Run, tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "opt" / "k8scc-image").mkdir(parents=True)
    (image / "opt" / "k8scc-image" / "hello.txt").write_text("from the image\n")
    (image / "usr" / "local" / "bin").mkdir(parents=True)
    tool = image / "usr" / "local" / "bin" / "k8scc-image-tool"
    tool.write_text("#!/bin/sh\necho image tool\n")
    tool.chmod(0o755)
    (image / "etc").mkdir()
    (image / "etc" / "hostname").write_text("image-hostname\n")
    status, output = run(
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
def test_missing_executable(run: Run) -> None:
    status, output = run(spec(["k8scc-no-such-command"]))
    assert status == ExitStatus(exit_code=127, oom_killed=False, signal=None)
    assert output.text("stderr") == ["env: 'k8scc-no-such-command': No such file or directory"]


@pytest.mark.timeout(30)
def test_setup_failure_is_reported(run: Run, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    status, output = run(dataclasses.replace(BASE, mounts=(Mount("/data", missing, False),)))
    assert status.exit_code != 0
    assert status.signal is None
    assert str(missing) in "\n".join(output.text("stderr"))


@pytest.mark.timeout(30)
def test_host_network_is_shared(run: Run) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(20)
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port})).sendall(b'hi')"
        status, output = run(spec(["python3", "-c", connect]))
        assert status.exit_code == 0, output.lines
        connection, _ = server.accept()
        with connection:
            assert connection.recv(16) == b"hi"


@pytest.mark.timeout(30)
def test_output_callback_failure_does_not_stop_draining(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    delivered: list[bytes] = []

    def fragile(stream: str, line: bytes) -> None:
        if line == b"boom":
            raise RuntimeError("callback failed")
        delivered.append(line)

    with caplog.at_level(logging.ERROR, logger="testbed.runtime"):
        container = Container(sh("echo boom; seq 1 2000"), fragile)
        container.start()
        try:
            status = container.wait(timeout=20)
        finally:
            container.close()
    assert status is not None
    assert status.exit_code == 0
    assert delivered == [str(n).encode() for n in range(1, 2001)]
    assert "on_output failed" in caplog.text


@pytest.mark.timeout(30)
def test_wait_timeout_and_close_of_a_running_container() -> None:
    container = Container(spec(["sleep", "1000"]), Output())
    assert container.pid is None
    with pytest.raises(RuntimeError):
        container.wait()
    try:
        container.start()
        assert container.pid is not None
        assert container.wait(timeout=0.2) is None
    finally:
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
        dataclasses.replace(BASE, working_dir="relative"),
        dataclasses.replace(BASE, image_dir=Path("/srv/a,b")),
        dataclasses.replace(BASE, memory_limit=0),
    ],
)
def test_invalid_specs_are_refused(invalid: ContainerSpec) -> None:
    with pytest.raises(ValueError):
        Container(invalid, Output())
