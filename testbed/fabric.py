"""A one-orderer, one-peer Fabric network as local processes on free loopback ports.

Fabric's own binaries (testbed.binaries, built from the Go module proxy) run natively without
Docker: cryptogen makes the identities, configtxgen an application channel genesis block (no
system channel, single-node Raft), the orderer joins the channel through its admin API and the
peer through `peer channel join`. The peer's core.yaml is the same Fabric version's
sampleconfig/core.yaml with `chaincode.externalBuilders` replaced, so chaincode can only be built
and launched by the external builders under test. Everything lives under `workdir`.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import yaml

from testbed import binaries, tools
from testbed.health import wait_http_ok

CHANNEL = "mychannel"
ORDERER_DOMAIN = "example.com"
PEER_DOMAIN = "org1.example.com"
PEER_MSPID = "Org1MSP"
ORDERER_MSPID = "OrdererMSP"
PEER_ID = f"peer0.{PEER_DOMAIN}"

# Long enough for an install whose builder compiles Go on a cold module cache.
_INSTALL_TIMEOUT = 900.0
_CLI_TIMEOUT = 120.0
# Fabric's default log format without the ANSI colours, which it emits even into files and
# which would sit between the fields that tests search the logs for.
LOG_FORMAT = (
    "%{time:2006-01-02 15:04:05.000 MST} [%{module}] %{shortfunc} -> %{level:.4s} %{message}"
)
# gRPC's connection chatter (multi-line in 3.x) would bury what the nodes and the CLI report.
LOG_SPEC = "info:grpc=error"
_PAYLOAD = re.compile(r'payload:\s*"((?:[^"\\]|\\.)*)"')


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets stay bound until every port is chosen."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def fabric_module_dir(component: binaries.Component) -> Path:
    """The pinned Fabric module in the Go module cache (downloaded if the cache lost it)."""
    result = subprocess.run(
        [str(tools.go()), "mod", "download", "-json", "github.com/hyperledger/fabric"],
        cwd=component.module_dir,
        env={**os.environ, "GOFLAGS": "-mod=readonly"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"go mod download of Fabric failed:\n{result.stdout}{result.stderr}")
    return Path(json.loads(result.stdout)["Dir"])


def _decode_payload(escaped: str) -> str:
    """Undoes Go's protobuf text escaping (\\", \\n, \\ooo, \\xhh) of a response payload."""
    raw: bytes = codecs.escape_decode(escaped.encode())[0]
    return raw.decode()


def _signature(rule: str) -> dict[str, str]:
    return {"Type": "Signature", "Rule": rule}


def _implicit(rule: str) -> dict[str, str]:
    return {"Type": "ImplicitMeta", "Rule": rule}


class PeerLauncher(Protocol):
    """Runs the peer somewhere other than a host process (testbed.peer_pod: in a pod)."""

    # Names the peer's TLS certificate is issued for; the CLI checks the first.
    tls_names: tuple[str, ...]

    def start(self, network: FabricNetwork, timeout: float) -> str:
        """Starts the peer of `network`; returns the host:port the CLI reaches it at."""
        ...

    def stop(self) -> None: ...

    def log(self) -> str: ...


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path


class FabricNetwork:
    """One orderer (single-node Raft) and one peer of Org1MSP on one application channel.

    `builders` is the exact `chaincode.externalBuilders` list of the peer's core.yaml.
    `peer_tls=False` turns TLS off on the peer and on the orderer's client listener (the peer
    dials the orderer with its own TLS setting); the Raft cluster listener keeps TLS because
    etcdraft requires it. `peer_env` is added to the peer's otherwise minimal environment, e.g.
    the variables a builder's `propagateEnvironment` names. `chaincode_host` is where the peer
    listens for chaincode: where pods reach the host (testbed.cluster.Testbed.host_address);
    the orderer listens there too, for a peer in a pod. `peer_launcher` runs the peer instead
    of a host process, from the crypto material and channel this network makes.
    """

    def __init__(
        self,
        workdir: Path,
        version: str,
        builders: Sequence[Mapping[str, Any]],
        peer_tls: bool = True,
        peer_env: Mapping[str, str] | None = None,
        channel: str = CHANNEL,
        chaincode_host: str = "127.0.0.1",
        peer_launcher: PeerLauncher | None = None,
    ) -> None:
        if version not in binaries.FABRIC:
            raise ValueError(f"unknown Fabric version {version!r}; known: {list(binaries.FABRIC)}")
        self.workdir = workdir.resolve()
        self.version = version
        self.component = binaries.FABRIC[version]
        self.builders = [dict(builder) for builder in builders]
        self.peer_tls = peer_tls
        self.peer_env = dict(peer_env or {})
        self.channel = channel
        self.chaincode_host = chaincode_host
        self.peer_launcher = peer_launcher
        self.bin_dir = Path()
        self._processes: dict[str, _Process] = {}
        ports = free_ports(7)
        self.orderer_port, self.cluster_port, self.admin_port, self.orderer_ops_port = ports[:4]
        self.peer_port, self.chaincode_port, self.peer_ops_port = ports[4:]
        self.peer_address = f"127.0.0.1:{self.peer_port}"

    # -- layout ---------------------------------------------------------------------------------

    @property
    def orderer_address(self) -> str:
        return f"{self.chaincode_host}:{self.orderer_port}"

    @property
    def chaincode_address(self) -> str:
        """What the peer writes into chaincode.json as `peer_address`."""
        return f"{self.chaincode_host}:{self.chaincode_port}"

    @property
    def crypto_dir(self) -> Path:
        return self.workdir / "crypto"

    @property
    def orderer_node_dir(self) -> Path:
        orgs = self.crypto_dir / "ordererOrganizations" / ORDERER_DOMAIN
        return orgs / "orderers" / f"orderer.{ORDERER_DOMAIN}"

    @property
    def peer_node_dir(self) -> Path:
        return self.crypto_dir / "peerOrganizations" / PEER_DOMAIN / "peers" / PEER_ID

    @property
    def admin_msp_dir(self) -> Path:
        users = self.crypto_dir / "peerOrganizations" / PEER_DOMAIN / "users"
        return users / f"Admin@{PEER_DOMAIN}" / "msp"

    @property
    def orderer_tls_ca(self) -> Path:
        return self.orderer_node_dir / "tls" / "ca.crt"

    @property
    def peer_tls_ca(self) -> Path:
        return self.peer_node_dir / "tls" / "ca.crt"

    @property
    def genesis_block(self) -> Path:
        return self.workdir / "channel-artifacts" / f"{self.channel}.block"

    @property
    def peer_config_dir(self) -> Path:
        """FABRIC_CFG_PATH of the peer and of the peer CLI (holds the edited core.yaml)."""
        return self.workdir / "peer" / "config"

    @property
    def peer_log_path(self) -> Path:
        return self.workdir / "logs" / "peer.log"

    @property
    def orderer_log_path(self) -> Path:
        return self.workdir / "logs" / "orderer.log"

    def peer_log(self) -> str:
        if self.peer_launcher is not None:
            return self.peer_launcher.log()
        return self.peer_log_path.read_text(errors="replace") if self.peer_log_path.exists() else ""

    def builder_output(self, limit: int = 60) -> str:
        """The last `limit` lines the external builders wrote to stderr (the peer logs them)."""
        lines = [line for line in self.peer_log().splitlines() if ".externalbuilder." in line]
        return "\n".join(lines[-limit:])

    def orderer_log(self) -> str:
        path = self.orderer_log_path
        return path.read_text(errors="replace") if path.exists() else ""

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FabricNetwork:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        self.bin_dir = binaries.ensure(self.component)
        sampleconfig = fabric_module_dir(self.component) / "sampleconfig"
        for sub in ("logs", "channel-artifacts", "orderer", "peer"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        try:
            self._generate_crypto()
            self._write_genesis_block()
            self._start_orderer(sampleconfig, timeout)
            self._write_core_yaml(sampleconfig)
            if self.peer_launcher is not None:
                self.peer_address = self.peer_launcher.start(self, timeout)
            else:
                self._start_peer(timeout)
            self._join_peer(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """Stops the peer, then the orderer: SIGTERM to each PID, SIGKILL after `timeout`."""
        if self.peer_launcher is not None:
            self.peer_launcher.stop()
        for name in ("peer", "orderer"):
            process = self._processes.pop(name, None)
            if process is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(signal.SIGTERM)
            try:
                process.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.popen.kill()
                process.popen.wait()
            # Chaincode started by a builder's `run` is in the peer's process group (the session
            # start() created); a peer that died without stopping it would leave it running.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.log.close()

    # -- setup steps ----------------------------------------------------------------------------

    def _tool(self, name: str, *args: str, timeout: float = _CLI_TIMEOUT) -> str:
        result = subprocess.run(
            [str(self.bin_dir / name), *args],
            cwd=self.workdir,
            env=self._clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{name} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _generate_crypto(self) -> None:
        sans = sorted({"127.0.0.1", "localhost", self.chaincode_host})
        launched = list(self.peer_launcher.tls_names) if self.peer_launcher else []
        config = {
            "OrdererOrgs": [
                {
                    "Name": "Orderer",
                    "Domain": ORDERER_DOMAIN,
                    "EnableNodeOUs": True,
                    "Specs": [{"Hostname": "orderer", "SANS": sans}],
                }
            ],
            "PeerOrgs": [
                {
                    "Name": "Org1",
                    "Domain": PEER_DOMAIN,
                    "EnableNodeOUs": True,
                    "Template": {"Count": 1, "SANS": sans + launched},
                    "Users": {"Count": 1},
                }
            ],
        }
        path = self.workdir / "crypto-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        shutil.rmtree(self.crypto_dir, ignore_errors=True)
        self._tool("cryptogen", "generate", f"--config={path}", f"--output={self.crypto_dir}")

    def _write_genesis_block(self) -> None:
        orderer_org = {
            "Name": "OrdererOrg",
            "ID": ORDERER_MSPID,
            "MSPDir": str(self.crypto_dir / "ordererOrganizations" / ORDERER_DOMAIN / "msp"),
            "Policies": {
                "Readers": _signature(f"OR('{ORDERER_MSPID}.member')"),
                "Writers": _signature(f"OR('{ORDERER_MSPID}.member')"),
                "Admins": _signature(f"OR('{ORDERER_MSPID}.admin')"),
            },
            "OrdererEndpoints": [self.orderer_address],
        }
        peer_org = {
            "Name": PEER_MSPID,
            "ID": PEER_MSPID,
            "MSPDir": str(self.crypto_dir / "peerOrganizations" / PEER_DOMAIN / "msp"),
            "Policies": {
                "Readers": _signature(
                    f"OR('{PEER_MSPID}.admin', '{PEER_MSPID}.peer', '{PEER_MSPID}.client')"
                ),
                "Writers": _signature(f"OR('{PEER_MSPID}.admin', '{PEER_MSPID}.client')"),
                "Admins": _signature(f"OR('{PEER_MSPID}.admin')"),
                "Endorsement": _signature(f"OR('{PEER_MSPID}.peer')"),
            },
        }
        tls_cert = str(self.orderer_node_dir / "tls" / "server.crt")
        standard_policies = {
            "Readers": _implicit("ANY Readers"),
            "Writers": _implicit("ANY Writers"),
            "Admins": _implicit("MAJORITY Admins"),
        }
        profile = {
            "Policies": standard_policies,
            # V2_0 rather than V3_0 so that one profile serves 2.5 and 3.x alike.
            "Capabilities": {"V2_0": True},
            "Orderer": {
                "OrdererType": "etcdraft",
                # Short batches keep `invoke --waitForEvent` fast.
                "BatchTimeout": "250ms",
                "BatchSize": {
                    "MaxMessageCount": 10,
                    "AbsoluteMaxBytes": "10 MB",
                    "PreferredMaxBytes": "2 MB",
                },
                "EtcdRaft": {
                    "Consenters": [
                        {
                            "Host": "127.0.0.1",
                            "Port": self.cluster_port,
                            "ClientTLSCert": tls_cert,
                            "ServerTLSCert": tls_cert,
                        }
                    ],
                    # A 100 ms tick lets the lone node elect itself within about two seconds.
                    "Options": {
                        "TickInterval": "100ms",
                        "ElectionTick": 10,
                        "HeartbeatTick": 1,
                        "MaxInflightBlocks": 5,
                        "SnapshotIntervalSize": "16 MB",
                    },
                },
                "Organizations": [orderer_org],
                "Policies": {**standard_policies, "BlockValidation": _implicit("ANY Writers")},
                "Capabilities": {"V2_0": True},
            },
            "Application": {
                "Organizations": [peer_org],
                "Policies": {
                    **standard_policies,
                    "LifecycleEndorsement": _implicit("MAJORITY Endorsement"),
                    "Endorsement": _implicit("MAJORITY Endorsement"),
                },
                "Capabilities": {"V2_5": True},
            },
        }
        config_dir = self.workdir / "configtx"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "configtx.yaml").write_text(
            yaml.safe_dump({"Profiles": {"K8sccChannel": profile}}, sort_keys=False)
        )
        self._tool(
            "configtxgen",
            "-configPath",
            str(config_dir),
            "-profile",
            "K8sccChannel",
            "-channelID",
            self.channel,
            "-outputBlock",
            str(self.genesis_block),
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> _Process:
        log_path = self.workdir / "logs" / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            cwd=self.workdir / name,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = _Process(name, popen, log, log_path)
        self._processes[name] = process
        return process

    def _check_alive(self, process: _Process) -> None:
        if process.popen.poll() is not None:
            tail = process.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode}; log tail:\n{tail}"
            )

    def _wait_healthy(self, process: _Process, port: int, timeout: float) -> None:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_http_ok(process.name, url, timeout, lambda: self._check_alive(process))

    def _wait_port(
        self, process: _Process, port: int, timeout: float, host: str = "127.0.0.1"
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive(process)
            with contextlib.suppress(OSError), socket.create_connection((host, port), 1):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} not listening on {port} after {timeout} s")
            time.sleep(0.1)

    def _wait_log(self, process: _Process, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in process.log_path.read_text(errors="replace"):
            self._check_alive(process)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} did not log {needle!r} after {timeout} s")
            time.sleep(0.1)

    def _clean_env(self) -> dict[str, str]:
        """The caller's environment without CORE_*/ORDERER_*/FABRIC_* overrides, which Fabric
        would apply on top of the config files written here."""
        prefixes = ("CORE_", "ORDERER_", "FABRIC_")
        return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}

    def _start_orderer(self, sampleconfig: Path, timeout: float) -> None:
        config: dict[str, Any] = yaml.safe_load((sampleconfig / "orderer.yaml").read_text())
        tls = self.orderer_node_dir / "tls"
        general = config["General"]
        general["ListenAddress"] = self.chaincode_host
        general["ListenPort"] = self.orderer_port
        general["LocalMSPID"] = ORDERER_MSPID
        general["LocalMSPDir"] = str(self.orderer_node_dir / "msp")
        general["TLS"].update(
            Enabled=self.peer_tls,
            PrivateKey=str(tls / "server.key"),
            Certificate=str(tls / "server.crt"),
            RootCAs=[str(tls / "ca.crt")],
            ClientAuthRequired=False,
        )
        # A listener of its own for Raft, so that it has TLS even when the client listener has
        # none; the node finds itself among the consenters by this client certificate.
        general["Cluster"].update(
            ListenAddress="127.0.0.1",
            ListenPort=self.cluster_port,
            ServerCertificate=str(tls / "server.crt"),
            ServerPrivateKey=str(tls / "server.key"),
            ClientCertificate=str(tls / "server.crt"),
            ClientPrivateKey=str(tls / "server.key"),
            RootCAs=[str(tls / "ca.crt")],
        )
        if "BootstrapMethod" in general:
            # 2.5 only: no system channel; channels are joined through the admin API.
            general["BootstrapMethod"] = "none"
        data = self.workdir / "orderer"
        config["FileLedger"]["Location"] = str(data / "ledger")
        config["Operations"]["ListenAddress"] = f"127.0.0.1:{self.orderer_ops_port}"
        config["Admin"]["ListenAddress"] = f"127.0.0.1:{self.admin_port}"
        config["ChannelParticipation"]["Enabled"] = True
        config["Consensus"] = {
            "WALDir": str(data / "etcdraft" / "wal"),
            "SnapDir": str(data / "etcdraft" / "snapshot"),
        }
        config_dir = data / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "orderer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {
            "PATH": tools.SYSTEM_PATH,
            "FABRIC_CFG_PATH": str(config_dir),
            "FABRIC_LOGGING_FORMAT": LOG_FORMAT,
            "FABRIC_LOGGING_SPEC": LOG_SPEC,
        }
        process = self._spawn("orderer", [str(self.bin_dir / "orderer")], env)
        self._wait_healthy(process, self.orderer_ops_port, timeout)
        # The operations server is up first; the admin and client listeners follow.
        self._wait_port(process, self.admin_port, timeout)
        self._wait_port(process, self.orderer_port, timeout, self.chaincode_host)
        self._tool(
            "osnadmin",
            "channel",
            "join",
            "--channelID",
            self.channel,
            "--config-block",
            str(self.genesis_block),
            "-o",
            f"127.0.0.1:{self.admin_port}",
        )
        # Transactions sent before the lone Raft node has elected itself are rejected.
        self._wait_log(process, "Raft leader changed: 0 -> 1", timeout)

    def core_config(self, sampleconfig: Path) -> dict[str, Any]:
        """The sample core.yaml with this network's settings (also read by the peer CLI)."""
        config: dict[str, Any] = yaml.safe_load((sampleconfig / "core.yaml").read_text())
        tls = self.peer_node_dir / "tls"
        peer = config["peer"]
        peer["id"] = PEER_ID
        peer["listenAddress"] = self.peer_address
        peer["address"] = self.peer_address
        # The chaincode dials exactly this address (chaincode.json `peer_address`); the peer's
        # chaincode server certificate is issued for its host part.
        peer["chaincodeListenAddress"] = self.chaincode_address
        peer["chaincodeAddress"] = self.chaincode_address
        peer["gossip"].update(
            bootstrap=self.peer_address,
            externalEndpoint=self.peer_address,
            useLeaderElection=False,
            orgLeader=True,
        )
        peer["tls"].update(
            enabled=self.peer_tls,
            clientAuthRequired=False,
            cert={"file": str(tls / "server.crt")},
            key={"file": str(tls / "server.key")},
            rootcert={"file": str(tls / "ca.crt")},
            clientRootCAs={"files": [str(tls / "ca.crt")]},
        )
        peer["fileSystemPath"] = str(self.workdir / "peer" / "data")
        peer["mspConfigPath"] = str(self.peer_node_dir / "msp")
        peer["localMspId"] = PEER_MSPID
        # An empty endpoint disables the Docker builder and its health check: only the
        # external builders can build and launch chaincode.
        config["vm"]["endpoint"] = ""
        config["chaincode"]["externalBuilders"] = copy.deepcopy(self.builders)
        config["ledger"]["snapshots"]["rootDir"] = str(self.workdir / "peer" / "snapshots")
        # The sample's 127.0.0.1:9443 is also the orderer's default admin port.
        config["operations"]["listenAddress"] = f"127.0.0.1:{self.peer_ops_port}"
        return config

    def _write_core_yaml(self, sampleconfig: Path) -> None:
        """The host peer's configuration, which the CLI reads too."""
        self.peer_config_dir.mkdir(parents=True, exist_ok=True)
        (self.peer_config_dir / "core.yaml").write_text(
            yaml.safe_dump(self.core_config(sampleconfig), sort_keys=False)
        )

    def _start_peer(self, timeout: float) -> None:
        tmp = self.workdir / "peer" / "tmp"
        tmp.mkdir(exist_ok=True)
        # Deliberately minimal: builders see only what propagateEnvironment names, and tests
        # should notice when a builder depends on something they did not pass in peer_env.
        env = {
            # The peer hands PATH to external builders; the host-side test builders run go.
            "PATH": tools.host_path(),
            "TMPDIR": str(tmp),
            "FABRIC_CFG_PATH": str(self.peer_config_dir),
            "FABRIC_LOGGING_FORMAT": LOG_FORMAT,
            "FABRIC_LOGGING_SPEC": LOG_SPEC,
            **self.peer_env,
        }
        process = self._spawn("peer", [str(self.bin_dir / "peer"), "node", "start"], env)
        self._wait_healthy(process, self.peer_ops_port, timeout)
        # The operations server comes up before the ledgers are opened and the gRPC server
        # listens; `peer channel join` needs the latter.
        self._wait_port(process, self.peer_port, timeout)

    def _join_peer(self, timeout: float) -> None:
        self._cli_checked("channel", "join", "-b", str(self.genesis_block))
        deadline = time.monotonic() + timeout
        while self.channel not in self._cli_checked("channel", "list").stdout.split():
            if time.monotonic() > deadline:
                raise TimeoutError(f"peer has not joined {self.channel} after {timeout} s")
            time.sleep(0.2)

    # -- peer CLI -------------------------------------------------------------------------------

    def cli_env(self) -> dict[str, str]:
        """Environment of the `peer` CLI acting as Org1's admin against this peer."""
        env = self._clean_env()
        env.update(
            # `peer lifecycle chaincode package --lang golang` runs go to find the module root.
            PATH=tools.host_path(),
            FABRIC_CFG_PATH=str(self.peer_config_dir),
            FABRIC_LOGGING_FORMAT=LOG_FORMAT,
            FABRIC_LOGGING_SPEC=LOG_SPEC,
            CORE_PEER_ADDRESS=self.peer_address,
            CORE_PEER_LOCALMSPID=PEER_MSPID,
            CORE_PEER_MSPCONFIGPATH=str(self.admin_msp_dir),
            CORE_PEER_TLS_ENABLED="true" if self.peer_tls else "false",
            CORE_PEER_TLS_ROOTCERT_FILE=str(self.peer_tls_ca),
        )
        if self.peer_launcher is not None:
            # The CLI dials the pod's address; the certificate names the pod's DNS name.
            env["CORE_PEER_TLS_SERVERHOSTOVERRIDE"] = self.peer_launcher.tls_names[0]
        return env

    def peer_cli(
        self, *args: str, timeout: float = _CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "peer"), *args],
            cwd=self.workdir,
            env=self.cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _cli_checked(
        self, *args: str, timeout: float = _CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        result = self.peer_cli(*args, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"peer {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def _orderer_args(self) -> list[str]:
        args = ["-o", self.orderer_address]
        if self.peer_tls:
            args += ["--tls", "--cafile", str(self.orderer_tls_ca)]
        return args

    def _endorser_args(self) -> list[str]:
        args = ["--peerAddresses", self.peer_address]
        if self.peer_tls:
            args += ["--tlsRootCertFiles", str(self.peer_tls_ca)]
        return args

    def package(self, path: Path, lang: str, label: str) -> Path:
        """`peer lifecycle chaincode package` of a source directory; returns the .tgz."""
        out = self.workdir / "packages" / f"{label}.tgz"
        out.parent.mkdir(exist_ok=True)
        self._cli_checked(
            "lifecycle",
            "chaincode",
            "package",
            str(out),
            "--path",
            str(path),
            "--lang",
            lang,
            "--label",
            label,
        )
        return out

    def deploy(self, package: Path, name: str, sequence: int = 1, version: str = "1.0") -> str:
        """Installs, approves and commits `package` as chaincode `name`; returns the package ID."""
        install = self.peer_cli(
            "lifecycle", "chaincode", "install", str(package), timeout=_INSTALL_TIMEOUT
        )
        if install.returncode != 0 and "already successfully installed" not in install.stderr:
            raise RuntimeError(
                f"install of {package} failed ({install.returncode}):\n{install.stderr}\n"
                f"builder output in the peer log:\n{self.builder_output()}"
            )
        package_id = self._cli_checked(
            "lifecycle", "chaincode", "calculatepackageid", str(package)
        ).stdout.strip()
        definition = [
            "--channelID",
            self.channel,
            "--name",
            name,
            "--version",
            version,
            "--sequence",
            str(sequence),
        ]
        self._cli_checked(
            "lifecycle",
            "chaincode",
            "approveformyorg",
            *self._orderer_args(),
            *definition,
            "--package-id",
            package_id,
        )
        self._cli_checked(
            "lifecycle",
            "chaincode",
            "commit",
            *self._orderer_args(),
            *definition,
            *self._endorser_args(),
        )
        return package_id

    def invoke(self, name: str, args: Sequence[str]) -> str:
        """Submits a transaction and waits for its commit; returns the chaincode's payload."""
        result = self._cli_checked(
            "chaincode",
            "invoke",
            *self._orderer_args(),
            *self._call_args(name, args),
            *self._endorser_args(),
            "--waitForEvent",
        )
        # The CLI logs `Chaincode invoke successful. result: status:200 payload:"..."`.
        match = _PAYLOAD.search(result.stderr)
        return _decode_payload(match.group(1)) if match else ""

    def query(self, name: str, args: Sequence[str]) -> str:
        """Evaluates a transaction on the peer; returns the payload."""
        result = self._cli_checked(
            "chaincode",
            "query",
            *self._call_args(name, args),
        )
        return result.stdout.removesuffix("\n")

    def _call_args(self, name: str, args: Sequence[str]) -> list[str]:
        """Channel, chaincode and arguments, as `peer chaincode invoke` and `query` take them."""
        return ["-C", self.channel, "-n", name, "-c", json.dumps({"Args": list(args)})]
