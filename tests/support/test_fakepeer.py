"""The fake peer on its own and against the Go sample built and run on the host, as Fabric's
Go build script builds it. (The node and Java samples register at it from the Fabric-like
images on the real node: tests/cluster/test_fabric_images.py.)
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


@contextmanager
def _chaincode_process(
    argv: list[str], chaincode: Mapping[str, str], tmp_path: Path
) -> Iterator[Path]:
    """Run a chaincode with the Docker launcher's environment; yields its log file."""
    env = {
        "PATH": tools.host_path(),
        "HOME": os.environ["HOME"],
        **launcher_env(chaincode, tmp_path / "tls"),
    }
    log = tmp_path / "chaincode.log"
    with log.open("wb") as out:
        # A session of its own, so its children die with it.
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
