"""A real Kubernetes node for the test bed: a kubelet built from the API server's Kubernetes
module, containerd 2.x built from its Go module, Debian's runc and CNI plugins on a bridge of
our own, and images built here (testbed.oci) imported into containerd.

Everything stays on this machine: the bridge has a private subnet with no gateway and no
masquerading, so pods get their own network namespace and address, reach the bridge address
(the node's, where host processes listen), and nothing else. The kubelet changes a few host
settings on start (sysctls, iptables chains, cgroups, a few hard-coded directories): start()
records how the host was and stop() puts it back, after every container has ended.

The kubelet's hard-coded paths and cgroup names allow one node per host at a time; a host-wide
lock makes a second test bed wait for the first. containerd's and the kubelet's state, sockets
included, lives in a short directory of its own (STATE_PREFIX): a Unix socket path holds at most
107 bytes, and a test's work directory can be longer than that. Logs stay in the work directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from lightkube import ALL_NS, ApiError
from lightkube.resources.core_v1 import Node, Pod

from testbed import binaries, oci, tools
from testbed.controlplane import ControlPlane, free_port, kubeconfig
from testbed.egress import EgressProxy
from testbed.relay import TcpRelay

BRIDGE = "k8scc0"
CNI_NETWORK = "k8scc"
SUBNET = "10.244.0.0/16"
NODE_IP = "10.244.0.1"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
PAUSE_IMAGE = "localhost/k8scc/pause:1.0"
HOST_LOCK = Path("/run/k8scc-realnode.lock")
# containerd's root (content, unpacked images) outlives a node, as on a real machine, so that a
# warm start imports nothing; the host lock keeps it to one node at a time.
IMPORTED = "k8scc-imported.json"
STATE_PREFIX = "k8scc-node-"
STATE_PARENT = Path("/tmp")
NAMESPACE = "k8s.io"  # containerd's namespace for CRI containers
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Directories the kubelet, containerd and the CNI plugins create outside the work directory.
HOST_DIRS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/run/containerd"),
    Path("/var/lib/cni"),
    Path("/run/netns"),
)
IPTABLES = ("iptables", "ip6tables")


def pause_image() -> oci.Image:
    pause = binaries.ensure(binaries.PAUSE) / "pause"
    return oci.Image(
        name=PAUSE_IMAGE,
        files={"/pause": oci.File(pause)},
        user="65535:65535",
        entrypoint=("/pause",),
    )


@dataclass
class HostState:
    sysctls: dict[str, str]
    chains: dict[tuple[str, str], set[str]]
    cgroups: set[Path]
    dirs: set[Path]
    netns: set[str]
    states: set[Path]


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class RealNode:
    workdir: Path
    control_plane: ControlPlane
    images: tuple[oci.Image, ...] = ()
    # Image name -> the further names it is tagged with.
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Reference -> OCI archive, for images built elsewhere (testbed.buildah).
    archives: dict[str, Path] = field(default_factory=dict)
    name: str = "k8scc-node"
    egress: EgressProxy | None = None
    api_relay: TcpRelay | None = None
    _lock: IO[str] | None = None
    _host: HostState | None = None
    _state: Path | None = None
    _processes: dict[str, _Process] = field(default_factory=dict)
    _kubelet_argv: list[str] = field(default_factory=list)

    # -- paths ---------------------------------------------------------------------------------

    @property
    def containerd_socket(self) -> Path:
        return self._state_path("containerd", "containerd.sock")

    def _path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    def _state_path(self, *parts: str) -> Path:
        if self._state is None:
            raise RuntimeError("the node has not been started")
        return self._state.joinpath(*parts)

    # -- start ---------------------------------------------------------------------------------

    @property
    def image_store(self) -> Path:
        return binaries.cache_root() / "containerd" / binaries.CONTAINERD_VERSION

    def image_archives(self) -> dict[str, Path]:
        """Every image the node imports, by reference: built, or found in the cache."""
        images = (pause_image(), *self.images)
        return {image.reference: oci.archive(image) for image in images} | self.archives

    def start(self, timeout: float = 90.0) -> None:
        containerd_dir = binaries.ensure(binaries.CONTAINERD)
        node_dir = binaries.ensure(binaries.NODE)
        archives = self.image_archives()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._lock = HOST_LOCK.open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._host = record_host()
        self._state = Path(tempfile.mkdtemp(prefix=STATE_PREFIX, dir=STATE_PARENT))
        try:
            _bridge_up()
            self.egress = EgressProxy(NODE_IP)
            self.egress.start()
            self.api_relay = TcpRelay(NODE_IP, ("127.0.0.1", self.control_plane.api_port))
            self.api_relay.start()
            self._start_containerd(containerd_dir, timeout)
            if self._forget_containers(containerd_dir):
                # containerd's CRI plugin read them at start: start it again without them.
                self._end("containerd", 15)
                self._start_containerd(containerd_dir, timeout)
            self._import(containerd_dir, archives)
            self._start_dns(binaries.ensure(binaries.COREDNS) / "coredns", timeout)
            self._start_kubelet(node_dir / "kubelet", timeout)
        except BaseException:
            self.stop()
            raise

    def _import(self, bin_dir: Path, archives: dict[str, Path]) -> None:
        """Imports what the image store lacks or holds in another build, then tags aliases."""
        record = self.image_store / IMPORTED
        imported = json.loads(record.read_text()) if record.is_file() else {}
        present = set(self._ctr(bin_dir, "images", "ls", "-q").split())
        for reference, archive in archives.items():
            if imported.get(reference) != archive.name or reference not in present:
                self._ctr(bin_dir, "images", "import", "--no-unpack=false", str(archive))
                imported[reference] = archive.name
                record.write_text(json.dumps(imported, indent=1))
        for image in self.images:
            for alias in self.aliases.get(image.name, ()):
                self._ctr(
                    bin_dir, "images", "tag", "--force", image.reference, oci.reference(alias)
                )

    def load(self, image: oci.Image) -> str:
        """Imports `image` into the running node under its tag and, as a registry pull would
        name it, under `repository@digest` too, which it returns."""
        bin_dir = binaries.ensure(binaries.CONTAINERD)
        archive = oci.archive(image)
        self._ctr(bin_dir, "images", "import", "--no-unpack=false", str(archive))
        digested = f"{image.repository}@{oci.manifest_digest(archive)}"
        self._ctr(bin_dir, "images", "tag", "--force", image.reference, oci.reference(digested))
        return digested

    def _forget_containers(self, bin_dir: Path) -> bool:
        """Removes the containers and sandboxes a node left in the image store (a real
        machine's reboot ends them too); True if there were any."""
        containers = self._ctr(bin_dir, "containers", "ls", "-q").split()
        for task in self._running_tasks(bin_dir):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._ctr(bin_dir, "tasks", "kill", "--signal", "SIGKILL", task)
        for container in containers:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._ctr(bin_dir, "tasks", "delete", "--force", container)
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._ctr(bin_dir, "containers", "delete", container)
        return bool(containers)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self._path(f"{name}.log").open("ab")
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        self._processes[name] = _Process(name, popen, log)

    def _check_alive(self, name: str) -> None:
        process = self._processes[name]
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.popen.returncode}; see {self._path(name + '.log')}"
            )

    def _start_containerd(self, bin_dir: Path, timeout: float) -> None:
        root = self._state_path("containerd")
        (root / "cni").mkdir(parents=True, exist_ok=True)
        (root / "cni" / "10-k8scc.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config = root / "config.toml"
        config.write_text(self._containerd_config(root))
        # containerd finds its shim on PATH, and the shim finds runc by BinaryName.
        env = {"PATH": f"{bin_dir}:{tools.SYSTEM_PATH}"}
        self._spawn("containerd", [str(bin_dir / "containerd"), "--config", str(config)], env)
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive("containerd")
            if self.containerd_socket.exists() and self._ctr_ok(bin_dir):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("containerd did not answer")
            time.sleep(0.1)

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    # No gateway and no masquerading: pods reach the bridge address only.
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": SUBNET, "rangeStart": "10.244.1.1"}]],
                        "dataDir": str(self._state_path("containerd", "ipam")),
                    },
                },
                {"type": "loopback"},
            ],
        }

    def _containerd_config(self, root: Path) -> str:
        # This machine's bounding set lacks CAP_SYS_RESOURCE, so runc may not lower
        # oom_score_adj: restrict_oom_score_adj keeps it at containerd's own.
        return f"""version = 3
root = "{self.image_store}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs"]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{root / "cni"}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""

    def _ctr(self, bin_dir: Path, *args: str) -> str:
        result = subprocess.run(
            [
                str(bin_dir / "ctr"),
                "--address",
                str(self.containerd_socket),
                "-n",
                NAMESPACE,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result.stdout

    def _ctr_ok(self, bin_dir: Path) -> bool:
        try:
            self._ctr(bin_dir, "version")
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return True

    def _start_kubelet(self, binary: Path, timeout: float) -> None:
        kubelet_dir = self._state_path("kubelet")
        kubelet_dir.mkdir()
        stem = self.control_plane.issue_client_cert(
            kubelet_dir / "node", f"system:node:{self.name}", "system:nodes"
        )
        node_kubeconfig = kubelet_dir / "kubeconfig"
        node_kubeconfig.write_text(
            kubeconfig(
                self.control_plane.server,
                self.control_plane.ca_file,
                {
                    "client-certificate": str(stem.with_suffix(".crt")),
                    "client-key": str(stem.with_suffix(".key")),
                },
            )
        )
        config = kubelet_dir / "config.yaml"
        config.write_text(yaml.safe_dump(self._kubelet_config(kubelet_dir)))
        self._kubelet_argv = [
            str(binary),
            f"--config={config}",
            f"--kubeconfig={node_kubeconfig}",
            f"--root-dir={kubelet_dir / 'root'}",
            f"--cert-dir={kubelet_dir / 'pki'}",
            f"--node-ip={NODE_IP}",
            f"--hostname-override={self.name}",
            "--v=1",
        ]
        self._spawn_kubelet(timeout)

    def _spawn_kubelet(self, timeout: float) -> None:
        self._spawn("kubelet", self._kubelet_argv, {"PATH": tools.SYSTEM_PATH})
        self._wait_ready(timeout)

    # -- faults --------------------------------------------------------------------------------

    def restart_kubelet(self, timeout: float = 60.0) -> None:
        """As a kubelet upgrade or crash does: containers keep running meanwhile, and the new
        kubelet takes them over."""
        self._end("kubelet", 30)
        self._spawn_kubelet(timeout)

    def restart_containerd(self, timeout: float = 60.0) -> None:
        """containerd alone: its shims, and so the containers, keep running."""
        self._end("containerd", 15)
        self._start_containerd(binaries.ensure(binaries.CONTAINERD), timeout)

    def _start_dns(self, binary: Path, timeout: float) -> None:
        """CoreDNS on the node's address, answering for the cluster's Services and pods from
        the API server; nothing else (pods resolve no outside names: see testbed.egress)."""
        directory = self._state_path("dns")
        directory.mkdir()
        corefile = directory / "Corefile"
        corefile.write_text(
            f".:53 {{\n"
            f"    bind {NODE_IP}\n"
            f"    errors\n"
            f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
            f'        kubeconfig {self.control_plane.admin_kubeconfig} ""\n'
            f"        pods verified\n"
            f"    }}\n"
            f"    ready {NODE_IP}:{free_port()}\n"
            f"}}\n"
        )
        self._spawn("coredns", [str(binary), "-conf", str(corefile)], {"PATH": tools.SYSTEM_PATH})
        deadline = time.monotonic() + timeout
        while not _answers_dns(NODE_IP):
            self._check_alive("coredns")
            if time.monotonic() > deadline:
                raise TimeoutError(f"CoreDNS did not answer; see {self._path('coredns.log')}")
            time.sleep(0.1)

    def _kubelet_config(self, kubelet_dir: Path) -> dict[str, Any]:
        resolv = kubelet_dir / "resolv.conf"
        resolv.write_text("")
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine has cgroup v1 (hybrid); 1.35+ refuses it unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": NODE_IP,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.control_plane.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(kubelet_dir / "pod-logs"),
            "volumePluginDir": str(kubelet_dir / "volume-plugins"),
            "resolvConf": str(resolv),
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [NODE_IP],
            # A small test machine: evict only when it is really short of room.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
        }

    def _wait_ready(self, timeout: float) -> None:
        client = self.control_plane.client()
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive("kubelet")
            with contextlib.suppress(ApiError):
                node = client.get(Node, self.name)
                conditions = (node.status.conditions if node.status else None) or []
                taints = (node.spec.taints if node.spec else None) or []
                ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
                if ready and not any(t.key == "node.kubernetes.io/not-ready" for t in taints):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.name} not Ready; see {self._path('kubelet.log')}")
            time.sleep(0.2)

    # -- what the node holds -------------------------------------------------------------------

    def held(self) -> dict[str, int]:
        """Counts of what the node's daemons hold and what its pods leave behind, for tests
        that look for leaks: pod resources return to their level once the pods are gone."""
        counts = {}
        for name in ("kubelet", "containerd"):
            proc = Path(f"/proc/{self._processes[name].popen.pid}")
            counts[f"{name} fds"] = len(list((proc / "fd").iterdir()))
            counts[f"{name} threads"] = len(list((proc / "task").iterdir()))
        addresses = Path("/var/lib/cni/networks") / CNI_NETWORK
        counts |= {
            "shims": len(_pids(lambda args: args[0].endswith("containerd-shim-runc-v2"))),
            "pod directories": _count(self._state_path("kubelet", "root", "pods")),
            "network namespaces": _count(Path("/run/netns")),
            "veths": len([d for d in os.listdir("/sys/class/net") if d.startswith("veth")]),
            "pod addresses": len([f for f in _names(addresses) if f.count(".") == 3]),
            "pod cgroups": sum(len(list(_walk_dirs(top))) for top in _kube_cgroups()),
        }
        return counts

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ends the node's pods, the kubelet and containerd, then restores the host."""
        try:
            if "kubelet" in self._processes:
                self._drain()
            self._end("kubelet", 30)
            if "containerd" in self._processes:
                self._kill_tasks()
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._forget_containers(binaries.ensure(binaries.CONTAINERD))
            self._end("containerd", 15)
            self._kill_shims()
            self._end("coredns", 10)
        finally:
            if self.egress is not None:
                self.egress.stop()
                self.egress = None
            if self.api_relay is not None:
                self.api_relay.stop()
                self.api_relay = None
            if self._host is not None:
                roots = [self.workdir, self.image_store] + ([self._state] if self._state else [])
                _restore_host(self._host, roots)
                self._host = None
            if self._state is not None:
                _remove_tree(self._state)
                self._state = None
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _drain(self, timeout: float = 30.0) -> None:
        """Lets the kubelet stop what runs (so CNI releases addresses and namespaces)."""
        with contextlib.suppress(Exception):
            client = self.control_plane.client()
            for pod in client.list(Pod, namespace=ALL_NS, fields={"spec.nodeName": self.name}):
                assert pod.metadata is not None
                with contextlib.suppress(ApiError):
                    client.delete(
                        Pod,
                        str(pod.metadata.name),
                        namespace=pod.metadata.namespace,
                        grace_period=0,
                    )
        bin_dir = binaries.ensure(binaries.CONTAINERD)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._running_tasks(bin_dir):
            time.sleep(0.2)

    def _running_tasks(self, bin_dir: Path) -> list[str]:
        try:
            listed = self._ctr(bin_dir, "tasks", "ls")
        except (RuntimeError, subprocess.TimeoutExpired):
            return []
        return [line.split()[0] for line in listed.splitlines()[1:] if "RUNNING" in line]

    def _kill_tasks(self) -> None:
        bin_dir = binaries.ensure(binaries.CONTAINERD)
        for task in self._running_tasks(bin_dir):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._ctr(bin_dir, "tasks", "kill", "--signal", "SIGKILL", task)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._running_tasks(bin_dir):
            time.sleep(0.1)

    def _end(self, name: str, timeout: float) -> None:
        process = self._processes.pop(name, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGTERM)
        try:
            process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait()
        process.log.close()

    def _kill_shims(self) -> None:
        """containerd's shims outlive it by design; ours name our socket in their arguments."""
        if self._state is None:
            return
        for pid in _pids_with_argument(str(self.containerd_socket)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _pids_with_argument(str(self.containerd_socket)) and time.monotonic() < deadline:
            time.sleep(0.1)

    def __enter__(self) -> RealNode:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- the host's state ----------------------------------------------------------------------------


def _pids(matches: Callable[[list[str]], bool]) -> list[int]:
    """Processes whose argument list `matches` accepts."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                arguments = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if matches(arguments):
                    pids.append(int(entry.name))
    return pids


def _pids_with_argument(argument: str) -> list[int]:
    return _pids(lambda arguments: argument in arguments)


def _names(directory: Path) -> list[str]:
    return os.listdir(directory) if directory.is_dir() else []


def _count(directory: Path) -> int:
    return len(_names(directory))


def _answers_dns(server: str) -> bool:
    """Whether a DNS server answers a query for the API server's Service name over UDP."""
    query = (
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + b"".join(
            bytes([len(p)]) + p.encode()
            for p in f"kubernetes.default.svc.{CLUSTER_DOMAIN}".split(".")
        )
        + b"\x00\x00\x01\x00\x01"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(query, (server, 53))
            answer = sock.recv(512)
        except OSError:
            return False
    return answer[:2] == b"\x12\x34"


def _bridge_up() -> None:
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "replace", f"{NODE_IP}/16", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def _ip(*args: str) -> None:
    subprocess.run(["/usr/sbin/ip", *args], check=True, capture_output=True)


def _kube_cgroups() -> set[Path]:
    found = set()
    for hierarchy in CGROUP_ROOT.iterdir():
        for name in ("kubepods", "kubepods.slice"):
            if (hierarchy / name).is_dir():
                found.add(hierarchy / name)
    if (CGROUP_ROOT / "kubepods").is_dir():
        found.add(CGROUP_ROOT / "kubepods")
    return found


def _chains() -> dict[tuple[str, str], set[str]]:
    chains: dict[tuple[str, str], set[str]] = {}
    for command in IPTABLES:
        for table in ("filter", "nat", "mangle"):
            chains[(command, table)] = set(_iptables_save(command, table)[0])
    return chains


def _iptables_save(command: str, table: str) -> tuple[list[str], list[str]]:
    """(chain names, rules as `-A ...` lines) of one table."""
    result = subprocess.run(
        [f"/usr/sbin/{command}-save", "-t", table], capture_output=True, text=True, check=False
    )
    lines = result.stdout.splitlines() if result.returncode == 0 else []
    names = [line[1:].split()[0] for line in lines if line.startswith(":")]
    return names, [line for line in lines if line.startswith("-A ")]


def record_host() -> HostState:
    """What start() saves and stop() restores; leftovers() compares with it."""
    return HostState(
        sysctls={name: Path("/proc/sys", name).read_text().strip() for name in SYSCTLS},
        chains=_chains(),
        cgroups=_kube_cgroups(),
        dirs={d for d in HOST_DIRS if d.exists()},
        netns=set(os.listdir("/run/netns")) if Path("/run/netns").is_dir() else set(),
        states=_state_dirs(),
    )


def _state_dirs() -> set[Path]:
    return set(STATE_PARENT.glob(f"{STATE_PREFIX}*"))


def _remove_tree(directory: Path) -> None:
    subprocess.run(["/usr/bin/rm", "-rf", "--one-file-system", str(directory)], check=False)


def _mounts_below(roots: list[Path]) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _unmount(points: list[str]) -> None:
    for point in points:
        subprocess.run(["/usr/bin/umount", "--lazy", point], capture_output=True, check=False)


def _remove_chains(before: dict[tuple[str, str], set[str]]) -> None:
    for (command, table), old in before.items():
        names, rules = _iptables_save(command, table)
        new = [name for name in names if name not in old]
        if not new:
            continue
        binary = f"/usr/sbin/{command}"
        for rule in rules:
            words = rule.split()
            if any(w in new for w in words[2:]) and words[1] not in new:
                subprocess.run([binary, "-t", table, "-D", *words[1:]], check=False)
        for name in new:
            subprocess.run([binary, "-t", table, "-F", name], check=False)
        for name in new:
            subprocess.run([binary, "-t", table, "-X", name], check=False)


def _remove_cgroup_tree(top: Path) -> None:
    for directory in sorted(_walk_dirs(top), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _walk_dirs(top: Path) -> Iterator[Path]:
    yield top
    with contextlib.suppress(OSError):
        for entry in top.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                yield from _walk_dirs(entry)


def _restore_host(before: HostState, roots: list[Path]) -> None:
    """Puts back what start() recorded; `roots` are the node's own directories."""
    netns_dir = Path("/run/netns")
    new_netns = [
        netns_dir / name
        for name in (os.listdir(netns_dir) if netns_dir.is_dir() else [])
        if name not in before.netns
    ]
    new_dirs = [d for d in HOST_DIRS if d not in before.dirs]
    _unmount(_mounts_below([*roots, *new_netns, *new_dirs]))
    for namespace in new_netns:
        with contextlib.suppress(OSError):
            namespace.unlink()
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _ip("link", "delete", BRIDGE)
    _remove_chains(before.chains)
    for cgroup in _kube_cgroups() - before.cgroups:
        _remove_cgroup_tree(cgroup)
    for name, value in before.sysctls.items():
        Path("/proc/sys", name).write_text(value)
    for directory in new_dirs:
        _remove_tree(directory)


def leftovers(before: HostState, workdir: Path) -> list[str]:
    """What a stopped node left on the host: empty when stop() did its job."""
    new_states = sorted(_state_dirs() - before.states)
    store = binaries.cache_root() / "containerd"
    found = [f"mount {point}" for point in _mounts_below([workdir, store, *new_states])]
    found += [f"directory {state}" for state in new_states]
    # The kubelet, containerd and CoreDNS all name the node's state directory in their arguments.
    state_prefix = str(STATE_PARENT / STATE_PREFIX)
    for pid in _pids(lambda arguments: any(state_prefix in a for a in arguments)):
        found.append(f"process {pid}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"network device {BRIDGE}")
    for pid in _pids_with_argument("k8s.io"):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if cmdline and re.search(rb"containerd-shim", cmdline[0]):
            found.append(f"shim process {pid}")
    found += [f"cgroup {cgroup}" for cgroup in sorted(_kube_cgroups() - before.cgroups)]
    for key, names in _chains().items():
        found += [f"{key[0]} {key[1]} chain {n}" for n in sorted(names - before.chains[key])]
    found += [f"directory {d}" for d in HOST_DIRS if d.exists() and d not in before.dirs]
    found += [
        f"sysctl {name}"
        for name, value in before.sysctls.items()
        if Path("/proc/sys", name).read_text().strip() != value
    ]
    return found
