"""Images tests build for themselves on the real node."""

from __future__ import annotations

from pathlib import Path

from testbed import oci

REPOSITORY = "localhost/k8scc/asset-transfer"


def chaincode_image(binary: Path) -> oci.Image:
    """The Go sample as operators ship it for a k8s package: its binary in a small image whose
    entrypoint hands the shim the peer's address, running as a numeric non-root user."""
    busybox = oci.busybox_image(f"{REPOSITORY}:1.0")
    return oci.Image(
        name=busybox.name,
        files={**busybox.files, "/usr/local/bin/asset-transfer": oci.File(binary)},
        symlinks=busybox.symlinks,
        directories=busybox.directories,
        user="1000",
        entrypoint=("/bin/sh", "-c", 'exec asset-transfer -peer.address="$CORE_PEER_ADDRESS"'),
    )
