"""`make demo`: start the test bed (a real kubelet and containerd) and a Fabric 3.1 network
whose peer runs in a pod deployed from deploy/, with k8scc inside it and its pods in a
chaincode namespace, files moving through the API; deploy the Go sample, invoke and query it,
and show what ran where. `--keep` leaves it all running."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from lightkube.resources.core_v1 import Pod

from testbed import binaries, realnode
from testbed.cluster import Testbed
from testbed.fabric import FabricNetwork
from testbed.k8scc_setup import REPO
from testbed.peer_pod import POD, PeerPod, pod_network

NAMESPACE = "fabric"
SAMPLE = REPO / "samples" / "chaincode" / "go"


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> float:
    print(f"demo: {text}", file=sys.stderr, flush=True)
    return time.monotonic()


def pods_of(log: str, kind: str) -> list[str]:
    return sorted(set(re.findall(rf"pod=({kind}-[a-z0-9-]+)", log)))


def chaincode_namespace(network: FabricNetwork) -> str:
    assert isinstance(network.peer_launcher, PeerPod)
    return network.peer_launcher.chaincode_namespace


def report(network: FabricNetwork, timings: dict[str, float], results: dict[str, str]) -> None:
    log = network.peer_log()
    say()
    say("k8scc demo — what ran where")
    say(f"  Fabric {network.version} peer: pod {POD} at {network.peer_address}, from deploy/base")
    say(f"  Fabric orderer: a native process on the node address {realnode.NODE_IP}")
    say(f"  namespace {NAMESPACE!r}: the peer and its Secrets (PodSecurity restricted)")
    say(
        f"  namespace {chaincode_namespace(network)!r}: k8scc's pods only, created as the"
        " peer's ServiceAccount k8scc, files streamed through the API (no shared volume)"
    )
    for name in pods_of(log, "ccbuild"):
        say(f"  builder pod   {name}  (ran Fabric's Go build, then was deleted)")
    for name in pods_of(log, "cc"):
        say(f"  chaincode pod {name}  (runs the chaincode, registered with the peer)")
    say()
    payload = f" with {results['invoke']}" if results["invoke"] else ""
    say(f"  invoke CreateAsset -> committed{payload}")
    say(f"  query  ReadAsset   -> {results['query']}")
    say()
    say("  chaincode output as the peer logged it (from `run`):")
    forwarded = [
        line.split("| ", 1)[1]
        for line in log.splitlines()
        if "command=run" in line and "| " in line
    ]
    for line in forwarded[:5]:
        say(f"    {line[:110]}")
    say()
    say("  timings:")
    for name, seconds in timings.items():
        say(f"    {name:<38} {seconds:6.1f} s")


def explore(testbed: Testbed, network: FabricNetwork) -> None:
    env = network.cli_env()
    exports = " ".join(
        f"{key}={shlex.quote(env[key])}"
        for key in sorted(env)
        if key.startswith(("CORE_PEER_", "FABRIC_CFG_PATH"))
    )
    say()
    say("Left running. To explore:")
    say(f"  export KUBECONFIG={testbed.control_plane.admin_kubeconfig}")
    say(f"  kubectl -n {chaincode_namespace(network)} get pods   # any kubectl works here")
    say(f"  export PATH={network.bin_dir}:$PATH {exports}")
    say(f'  peer chaincode query -C {network.channel} -n basic -c \'{{"Args":["GetAllAssets"]}}\'')
    say(f"  kubectl -n {NAMESPACE} logs {POD}   # the peer's log, k8scc's lines among it")
    say("Stop it with Ctrl-C here.")


def main() -> None:
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    args = parser.parse_args()
    timings: dict[str, float] = {}
    started = step("building or reusing binaries (minutes on a cold cache)")
    for component in (
        binaries.ETCD,
        binaries.KUBE,
        binaries.KUBECTL,
        binaries.NODE,
        binaries.CONTAINERD,
        binaries.COREDNS,
        binaries.PAUSE,
        binaries.FABRIC["3.1"],
    ):
        binaries.ensure(component)
    timings["binaries ready"] = time.monotonic() - started

    workdir = Path(tempfile.mkdtemp(prefix="k8scc-demo-"))
    started = step(f"starting the test bed in {workdir} (images: minutes on a cold cache)")
    testbed = Testbed(workdir / "testbed")
    testbed.start()
    network: FabricNetwork | None = None
    try:
        control_plane = testbed.control_plane
        control_plane.create_namespace(NAMESPACE)
        timings["test bed up (API server, kubelet)"] = time.monotonic() - started

        started = step("starting a Fabric 3.1 orderer, and the peer in a pod with k8scc inside")
        network = pod_network(testbed, NAMESPACE, workdir)
        network.start()
        timings["Fabric network up, channel joined"] = time.monotonic() - started

        started = step("packaging the Go sample and installing it (build in a builder pod)")
        package = network.package(SAMPLE, "golang", "basic_1.0")
        network.deploy(package, "basic")
        timings["install (build) + approve + commit"] = time.monotonic() - started

        started = step("invoking CreateAsset (chaincode pod launched by `run`)")
        results = {
            "invoke": network.invoke("basic", ["CreateAsset", "asset1", "blue", "5", "tom", "300"])
        }
        timings["first invoke"] = time.monotonic() - started
        started = step("querying ReadAsset")
        results["query"] = json.dumps(json.loads(network.query("basic", ["ReadAsset", "asset1"])))
        timings["query"] = time.monotonic() - started
        client = control_plane.client()
        pods = client.list(Pod, namespace=chaincode_namespace(network))
        running = [p for p in pods if p.status and p.status.phase == "Running"]
        client.close()
        if not running:
            raise RuntimeError("no chaincode pod is running")
        report(network, timings, results)
        if args.keep:
            explore(testbed, network)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        step("tearing down")
        if network is not None:
            network.stop()
        testbed.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
