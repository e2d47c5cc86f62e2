"""Images built from the Dockerfiles k8scc ships (images/*), by a real Dockerfile builder:
Debian's buildah, rootful, with chroot isolation and the vfs driver, in a store of its own
under the cache, so nothing of the host's container storage is touched.

Base images come as OCI archives through build arguments (`FROM ${JAVAENV}` and the like),
so a recipe builds on the test bed's images without a registry. The result is an OCI archive
for `ctr images import`, cached by the recipe's files and arguments.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from testbed import oci
from testbed.binaries import cache_root

BUILDAH = "/usr/bin/buildah"


def _store() -> list[str]:
    store = cache_root() / "buildah"
    return [
        f"--root={store / 'root'}",
        f"--runroot={store / 'run'}",
        "--storage-driver=vfs",
    ]


def _key(context: Path, name: str, arguments: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps([name, sorted(arguments.items())]).encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(path.relative_to(context).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build(
    context: Path,
    name: str,
    bases: dict[str, Path],
    arguments: dict[str, str] | None = None,
    dockerfile: Path | None = None,
) -> Path:
    """The image of `dockerfile` (default `context`/Dockerfile) as an OCI archive; `bases`
    maps build arguments to the OCI archives they stand for, `arguments` gives the others."""
    arguments = {
        **(arguments or {}),
        **{argument: f"oci-archive:{archive}" for argument, archive in bases.items()},
    }
    slug = oci.reference(name).replace("/", "_").replace(":", "-")
    target = cache_root() / "images" / f"{slug}-{_key(context, name, arguments)}.tar"

    def run(staging: Path) -> None:
        print(f"testbed: building image {name} from {context}", file=sys.stderr, flush=True)
        argv = [BUILDAH, *_store(), "build", "--isolation=chroot", "--quiet", f"--tag={name}"]
        argv += [f"--build-arg={key}={value}" for key, value in arguments.items()]
        argv += [f"--file={dockerfile}"] if dockerfile else []
        _buildah([*argv, str(context)])
        _buildah([BUILDAH, *_store(), "push", name, f"oci-archive:{staging}:{oci.reference(name)}"])
        _buildah([BUILDAH, *_store(), "rmi", "--all", "--force"])

    return oci.cached(target, run)


def _buildah(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"buildah {argv[4]} failed: {result.stderr.strip()[-3000:]}")
