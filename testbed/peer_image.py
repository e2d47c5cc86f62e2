"""The peer image k8scc ships a recipe for (images/peer/Dockerfile), built by buildah on the
test bed's stand-ins for its two bases, which carry the real names:

- hyperledger/fabric-peer:<version>: the peer we built from Fabric's module, Fabric's sample
  configuration (core.yaml and msp/) at /etc/hyperledger/fabric, and stand-ins for Fabric's
  chaincode-as-a-service builder under /opt/hyperledger (its module is not served here);
- ubuntu:24.04: a Debian root filesystem with apt (no registry here serves Ubuntu); the recipe
  installs Python from it as it would from Ubuntu's.

The image is tagged as releases are (docs/releasing.md): <Fabric version>-k8scc<k8scc version>.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import k8scc
from testbed import binaries, buildah, fabric_images, oci, tools
from testbed.binaries import cache_root
from testbed.fabric import fabric_module_dir

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "images" / "peer"
STANDINS = Path(__file__).resolve().parent / "fabric_images" / "peer"
UBUNTU = "ubuntu:24.04"
REPOSITORY = "k8scc-peer"


def tag(fabric_version: str) -> str:
    """The image's tag, from the one place k8scc's version is kept."""
    return f"{REPOSITORY}:{binaries.FABRIC[fabric_version].version}-k8scc{k8scc.__version__}"


def fabric_peer(fabric_version: str) -> oci.Image:
    component = binaries.FABRIC[fabric_version]
    peer = binaries.ensure(component) / "peer"
    ccaas = "/opt/hyperledger/ccaas_builder/bin"
    return oci.Image(
        name=f"hyperledger/fabric-peer:{component.version}",
        files={
            "/usr/local/bin/peer": oci.File(peer),
            **{f"{ccaas}/{p.name}": oci.File(p) for p in sorted(STANDINS.iterdir())},
        },
        trees={
            "/etc/hyperledger/fabric": oci.Tree(
                fabric_module_dir(component) / "sampleconfig", component.version
            )
        },
        env=("FABRIC_CFG_PATH=/etc/hyperledger/fabric",),
    )


def ubuntu() -> oci.Image:
    return oci.Image(
        name=UBUNTU,
        base=oci.Debian("bookworm", ("ca-certificates",)),
        files=fabric_images.host_cas(),
        prepare=fabric_images.trust_host_cas,
        prepared="update-ca-certificates",
    )


def build(fabric_version: str) -> tuple[str, Path]:
    """(the image's name, its OCI archive): the recipe built from a context holding what the
    Dockerfile copies, a wheel of this work tree among them."""
    with tempfile.TemporaryDirectory(dir=cache_root()) as scratch:
        context = Path(scratch) / "context"
        shutil.copytree(RECIPE, context / "images" / "peer")
        subprocess.run(
            [str(tools.uv()), "build", "--wheel", "--quiet", "--out-dir", str(context / "dist")],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        name = tag(fabric_version)
        archive = buildah.build(
            context,
            name,
            {
                "FABRIC_PEER_IMAGE": oci.archive(fabric_peer(fabric_version)),
                "BASE_IMAGE": oci.archive(ubuntu()),
            },
            {"FABRIC_VERSION": binaries.FABRIC[fabric_version].version},
            dockerfile=context / "images" / "peer" / "Dockerfile",
        )
    return name, archive
