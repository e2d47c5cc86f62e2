"""The fake peer on its own and against the sample chaincodes, built and run on the host.

Builds follow what Fabric's Docker builder runs in its build images (the Go build script,
and for Node and Java the test-bed stand-ins for the nodeenv/javaenv scripts), with
K8SCC_FSROOT standing in for the container's root. Toolchain caches are the user's
normal ones, so only the first run pays for downloads.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import grpc
import pytest

from testbed import tools
from tests.support.fakepeer import (
    ChaincodeID,
    ChaincodeMessage,
    FakePeer,
    Registration,
    cert_sha256,
)
from tests.support.tlsfiles import launcher_env

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "chaincode"
NODEENV = REPO / "testbed" / "images" / "nodeenv"
JAVAENV = REPO / "testbed" / "images" / "javaenv"
CHAINCODE_ID = "asset-transfer_1.0:" + "5e" * 32


def _lay_out_package(sample: Path, root: Path) -> None:
    """Place a sample where the peer extracts code.tar.gz, as the Fabric CLI packages it."""
    shutil.copytree(sample, root / "chaincode/input/src", ignore=shutil.ignore_patterns("META-INF"))
    shutil.copytree(sample / "META-INF", root / "chaincode/input/META-INF")
    (root / "chaincode/output").mkdir()


def _timed_build(what: str, argv: list[str], cwd: Path, env: Mapping[str, str]) -> None:
    started = time.monotonic()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{what} failed:\n{result.stdout}\n{result.stderr}"
    print(f"{what}: {time.monotonic() - started:.1f} s")


def _release(root: Path, runtime_dir: str) -> None:
    """Move the build output where Fabric's runtime image would have it."""
    target = root / runtime_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    (root / "chaincode/output").rename(target)


@pytest.fixture(scope="module")
def go_chaincode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("go")
    _lay_out_package(SAMPLES / "go", root)
    out = root / "chaincode/output"
    # Branch 2 of Fabric's Go build script (go.mod at the root of src, no vendor/).
    script = (
        "set -e; GO111MODULE=on go build -v -mod=readonly "
        f"-ldflags \"-linkmode external -extldflags '-static'\" -o {out}/chaincode ."
    )
    env = {**os.environ, "PATH": tools.host_path()}
    _timed_build("go build", ["/bin/sh", "-c", script], root / "chaincode/input/src", env)
    return out / "chaincode"


@pytest.fixture(scope="module")
def node_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("node")
    _lay_out_package(SAMPLES / "node", root)
    env = {**os.environ, "K8SCC_FSROOT": str(root)}
    _timed_build("nodeenv build.sh", [str(NODEENV / "chaincode/build.sh")], root, env)
    _release(root, "usr/local/src")
    return root


@pytest.fixture(scope="module")
def java_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("java")
    _lay_out_package(SAMPLES / "java", root)
    workdir = root / "root/chaincode-java"
    workdir.mkdir(parents=True)
    env = {**os.environ, "K8SCC_FSROOT": str(root)}
    _timed_build("javaenv build.sh", [str(JAVAENV / "root/chaincode-java/build.sh")], workdir, env)
    _release(root, "root/chaincode-java/chaincode")
    return root


@contextmanager
def _chaincode_process(
    argv: list[str], chaincode: Mapping[str, str], tmp_path: Path, fsroot: Path | None = None
) -> Iterator[Path]:
    """Run a chaincode with the Docker launcher's environment; yields its log file."""
    env = {
        "PATH": tools.host_path(),
        "HOME": os.environ["HOME"],
        **launcher_env(chaincode, tmp_path / "tls"),
    }
    if fsroot is not None:
        env["K8SCC_FSROOT"] = str(fsroot)
    log = tmp_path / "chaincode.log"
    with log.open("wb") as out:
        # A session of its own, so npm's and sh's children die with it.
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield log
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_for_line(log: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def _assert_registered(peer: FakePeer, chaincode: Mapping[str, str], log: Path, lang: str) -> None:
    registered = peer.wait_registered(CHAINCODE_ID, timeout=60)
    output = log.read_text(errors="replace")
    assert registered, f"no REGISTER from the {lang} chaincode; its output:\n{output}"
    identity = cert_sha256(chaincode["client_cert"]) if chaincode["client_cert"] else ""
    assert peer.registrations() == [Registration(CHAINCODE_ID, identity)]
    assert _wait_for_line(log, f"asset-transfer: starting {lang} chaincode", 10), output


def _register_from_python(
    address: str, root_cert: str, client_key: str, client_cert: str, name: str
) -> list[int]:
    """Open a Register stream as a chaincode would; returns the types of the first two replies."""
    credentials = grpc.ssl_channel_credentials(
        root_cert.encode(), client_key.encode(), client_cert.encode()
    )
    register = ChaincodeMessage(
        type=ChaincodeMessage.REGISTER, payload=ChaincodeID(name=name).SerializeToString()
    )
    with grpc.secure_channel(address, credentials) as channel:
        call = channel.stream_stream(
            "/protos.ChaincodeSupport/Register",
            request_serializer=ChaincodeMessage.SerializeToString,
            response_deserializer=ChaincodeMessage.FromString,
        )
        replies = call(iter([register]), timeout=10)
        try:
            return [next(replies).type, next(replies).type]
        finally:
            replies.cancel()


@pytest.mark.timeout(60)
def test_python_client_registers_over_tls() -> None:
    with FakePeer(tls=True) as peer:
        cc = peer.chaincode_json(CHAINCODE_ID)
        replies = _register_from_python(
            cc["peer_address"], cc["root_cert"], cc["client_key"], cc["client_cert"], CHAINCODE_ID
        )
        assert replies == [ChaincodeMessage.REGISTERED, ChaincodeMessage.READY]
        assert peer.wait_registered(CHAINCODE_ID, timeout=5)
        assert peer.registrations() == [Registration(CHAINCODE_ID, cert_sha256(cc["client_cert"]))]


@pytest.mark.timeout(60)
def test_client_cert_from_another_ca_is_rejected() -> None:
    with FakePeer(tls=True) as peer, FakePeer(tls=True) as other:
        trusted = peer.chaincode_json(CHAINCODE_ID)
        foreign = other.chaincode_json(CHAINCODE_ID)
        with pytest.raises(grpc.RpcError) as failure:
            _register_from_python(
                peer.address,
                trusted["root_cert"],
                foreign["client_key"],
                foreign["client_cert"],
                CHAINCODE_ID,
            )
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert peer.registered() == []


@pytest.mark.timeout(60)
def test_client_cert_issued_for_another_chaincode_is_rejected() -> None:
    with FakePeer(tls=True) as peer:
        cc = peer.chaincode_json("other_1.0:" + "0f" * 32)
        with pytest.raises(grpc.RpcError) as failure:
            _register_from_python(
                peer.address, cc["root_cert"], cc["client_key"], cc["client_cert"], CHAINCODE_ID
            )
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert peer.registered() == []


@pytest.mark.timeout(30)
def test_chaincode_json_without_tls_has_empty_tls_fields() -> None:
    with FakePeer(tls=False, mspid="Org2MSP") as peer:
        cc = peer.chaincode_json(CHAINCODE_ID)
    assert list(cc) == [
        "chaincode_id",
        "peer_address",
        "client_cert",
        "client_key",
        "root_cert",
        "mspid",
    ]
    assert cc["client_cert"] == cc["client_key"] == cc["root_cert"] == ""
    assert cc["mspid"] == "Org2MSP"
    assert cc["peer_address"].startswith("127.0.0.1:")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plaintext"])
def test_go_sample_registers(go_chaincode: Path, tmp_path: Path, tls: bool) -> None:
    with FakePeer(tls=tls) as peer:
        cc = peer.chaincode_json(CHAINCODE_ID)
        argv = [str(go_chaincode), f"-peer.address={cc['peer_address']}"]
        with _chaincode_process(argv, cc, tmp_path) as log:
            _assert_registered(peer, cc, log, "go")


@pytest.mark.timeout(300)
def test_node_sample_registers_over_tls(node_root: Path, tmp_path: Path) -> None:
    with FakePeer(tls=True) as peer:
        cc = peer.chaincode_json(CHAINCODE_ID)
        argv = [str(NODEENV / "chaincode/start.sh"), "--peer.address", cc["peer_address"]]
        with _chaincode_process(argv, cc, tmp_path, fsroot=node_root) as log:
            _assert_registered(peer, cc, log, "node")


@pytest.mark.timeout(600)
def test_java_sample_registers_over_tls(java_root: Path, tmp_path: Path) -> None:
    with FakePeer(tls=True) as peer:
        cc = peer.chaincode_json(CHAINCODE_ID)
        argv = [str(JAVAENV / "root/chaincode-java/start"), "--peerAddress", cc["peer_address"]]
        with _chaincode_process(argv, cc, tmp_path, fsroot=java_root) as log:
            _assert_registered(peer, cc, log, "java")
