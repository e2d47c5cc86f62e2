"""The native Fabric network of testbed.fabric, end to end, for each pinned Fabric version.

The external builder here is deliberately trivial and not k8scc: four shell scripts that build
the Go sample on the host (Fabric's Go build, module branch) and run it on the host with the
CORE_* environment and TLS files taken from chaincode.json. If these tests pass, the network
launcher is sound and k8scc's own e2e tests can swap in the real builder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import binaries, tools
from testbed.fabric import FabricNetwork

pytestmark = pytest.mark.e2e

VERSIONS = ["3.1", "2.5"]
GO_SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "chaincode" / "go"
# Covers building Fabric from the Go module proxy when the binary cache is cold.
TIMEOUT = 900

DETECT = """#!/bin/sh
# Claims Go packages only; `peer lifecycle chaincode package --lang golang` writes this type.
exec grep -qi '"type":"golang"' "$2/metadata.json"
"""

BUILD = """#!/bin/sh
# Fabric's Go build script, branch 2 (go.mod at the root of the package's src/), on the host.
set -e
exec 1>&2
path=$("{python}" -c 'import json, sys; print(json.load(open(sys.argv[1]))["path"])' \\
    "$2/metadata.json")
cd "$1/src"
go build -mod=readonly -o "$3/chaincode" "$path"
"""

# Writes the TLS material next to chaincode.json and exports what the Go shim reads, as
# Fabric's Docker launcher does inside a chaincode container.
RUN_ENV = r"""
import json, shlex, sys
meta = sys.argv[1]
with open(meta + "/chaincode.json") as f:
    cc = json.load(f)
tls = cc["root_cert"] != ""
env = {
    "CORE_CHAINCODE_ID_NAME": cc["chaincode_id"],
    "CORE_PEER_LOCALMSPID": cc["mspid"],
    "CORE_PEER_TLS_ENABLED": "true" if tls else "false",
    "PEER_ADDRESS": cc["peer_address"],
}
if tls:
    for name, key, var in (
        ("client.crt", "client_cert", "CORE_TLS_CLIENT_CERT_FILE"),
        ("client.key", "client_key", "CORE_TLS_CLIENT_KEY_FILE"),
        ("root.crt", "root_cert", "CORE_PEER_TLS_ROOTCERT_FILE"),
    ):
        with open(meta + "/" + name, "w") as f:
            f.write(cc[key])
        env[var] = meta + "/" + name
for key, value in env.items():
    print(f"export {key}={shlex.quote(value)}")
"""

RUN = """#!/bin/sh
set -e
exec 1>&2
eval "$("{python}" "$(dirname "$0")/../run_env.py" "$2")"
# One line in the peer log per launch, for the tests to check what chaincode.json held.
echo "host-go run: id=$CORE_CHAINCODE_ID_NAME tls=$CORE_PEER_TLS_ENABLED peer=$PEER_ADDRESS"
exec "$1/chaincode" -peer.address="$PEER_ADDRESS"
"""


def write_host_builder(root: Path) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {
        "detect": DETECT,
        "build": BUILD.replace("{python}", sys.executable),
        "run": RUN.replace("{python}", sys.executable),
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    # Outside bin/, which holds only the programs the peer calls.
    (root / "run_env.py").write_text(RUN_ENV)
    return root


def go_env() -> dict[str, str]:
    """What `go build` in the builder needs, since the peer passes builders only the variables
    that propagateEnvironment names (plus PATH and TMPDIR)."""
    names = ["GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOSUMDB", "GOFLAGS", "GOTOOLCHAIN"]
    result = subprocess.run(
        [str(tools.go()), "env", "-json", *names], capture_output=True, text=True, check=True
    )
    values: dict[str, str] = json.loads(result.stdout)
    env = {name: value for name, value in values.items() if value}
    env["HOME"] = os.environ.get("HOME", "/root")
    return env


def network(tmp_path: Path, version: str, peer_tls: bool = True) -> FabricNetwork:
    builder = write_host_builder(tmp_path / "builder")
    env = go_env()
    builders = [{"name": "host-go", "path": str(builder), "propagateEnvironment": sorted(env)}]
    return FabricNetwork(tmp_path / "net", version, builders, peer_tls=peer_tls, peer_env=env)


def processes_under(directory: Path) -> list[str]:
    """Command lines of live processes whose executable or arguments lie under `directory`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in cmdline:
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


def deploy_and_use_asset(net: FabricNetwork) -> str:
    package = net.package(GO_SAMPLE, "golang", "asset_1")
    package_id = net.deploy(package, "asset")
    assert package_id.startswith("asset_1:")
    net.invoke("asset", ["CreateAsset", "asset7", "blue", "35", "tom", "1000"])
    asset = json.loads(net.query("asset", ["ReadAsset", "asset7"]))
    assert asset == {
        "docType": "asset",
        "ID": "asset7",
        "color": "blue",
        "size": 35,
        "owner": "tom",
        "appraisedValue": 1000,
    }
    # Payloads returned by invoke come back unescaped, JSON quotes included.
    assert net.invoke("asset", ["TransferAsset", "asset7", "jerry"]) == "tom"
    assert json.loads(net.invoke("asset", ["ReadAsset", "asset7"]))["owner"] == "jerry"
    assert json.loads(net.query("asset", ["ReadAsset", "asset7"]))["owner"] == "jerry"
    return package_id


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("version", VERSIONS)
def test_go_sample_through_host_builder(tmp_path: Path, version: str) -> None:
    net = network(tmp_path, version)
    with net:
        package_id = deploy_and_use_asset(net)
        log = net.peer_log()
        assert f"host-go run: id={package_id} tls=true peer={net.chaincode_address}" in log
        assert "asset-transfer: starting go chaincode" in log
        chaincode_dir = net.workdir / "peer" / "data"
        assert processes_under(chaincode_dir), "the chaincode should run while the peer does"
    assert processes_under(net.workdir) == []


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("version", VERSIONS)
def test_go_sample_with_peer_tls_off(tmp_path: Path, version: str) -> None:
    net = network(tmp_path, version, peer_tls=False)
    with net:
        package_id = deploy_and_use_asset(net)
        assert f"host-go run: id={package_id} tls=false" in net.peer_log()
    assert processes_under(net.workdir) == []


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("version", VERSIONS)
def test_peer_reports_pinned_version(tmp_path: Path, version: str) -> None:
    pinned = binaries.FABRIC[version].version
    assert pinned.startswith(version + ".")
    with network(tmp_path, version) as net:
        result = net.peer_cli("version")
        assert result.returncode == 0, result.stderr
        assert f"Version: {pinned}\n" in result.stdout
        # The running node, not only the CLI, is the pinned build.
        assert f"Version: {pinned}\n" in net.peer_log()
