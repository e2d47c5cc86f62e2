"""OCI images built on this machine, with no registry: a root filesystem assembled from host
files, packed by umoci (Debian's) into an OCI layout and tarred for `ctr images import`.

Archives are cached under ~/.cache/k8scc/images, keyed by everything that goes into them, so
an unchanged image costs nothing on the next start.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from testbed.binaries import cache_root

UMOCI = "/usr/bin/umoci"


@dataclass(frozen=True)
class File:
    source: Path
    mode: int = 0o755


@dataclass(frozen=True)
class Image:
    """`name` is repository:tag. Paths in the maps are absolute paths inside the image."""

    name: str
    files: dict[str, File] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    # directory -> (mode, uid, gid)
    directories: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    workdir: str = ""

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]

    @property
    def reference(self) -> str:
        """The name as the kubelet asks containerd for it (Docker's normalisation)."""
        first, _, rest = self.name.partition("/")
        if not rest:
            return f"docker.io/library/{self.name}"
        if "." in first or ":" in first or first == "localhost":
            return self.name
        return f"docker.io/{self.name}"

    def key(self) -> str:
        digest = hashlib.sha256()
        recipe = {
            "name": self.name,
            "files": {p: [f.mode, _file_digest(f.source)] for p, f in sorted(self.files.items())},
            "symlinks": sorted(self.symlinks.items()),
            "directories": sorted(self.directories.items()),
            "config": [self.user, self.entrypoint, self.cmd, self.env, self.workdir],
        }
        digest.update(json.dumps(recipe, sort_keys=True).encode())
        return digest.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archive(image: Image) -> Path:
    """The image as an OCI layout tarball, built if the cache does not hold it."""
    slug = image.repository.replace("/", "_")
    target = cache_root() / "images" / f"{slug}-{image.tag}-{image.key()}.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{slug}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            _build(image, target)
    return target


def _umoci(*args: str) -> None:
    result = subprocess.run([UMOCI, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"umoci {args[0]} failed: {result.stderr.strip()}")


def _build(image: Image, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="k8scc-image-") as scratch:
        layout, bundle = Path(scratch) / "layout", Path(scratch) / "bundle"
        ref = f"{layout}:{image.tag}"
        _umoci("init", "--layout", str(layout))
        _umoci("new", "--image", ref)
        _umoci("unpack", "--image", ref, str(bundle))
        _populate(image, bundle / "rootfs")
        _umoci("repack", "--image", ref, str(bundle))
        config = ["config", "--image", ref, "--clear=config.env"]
        config += [f"--config.env={variable}" for variable in image.env]
        if image.user:
            config.append(f"--config.user={image.user}")
        if image.workdir:
            config.append(f"--config.workingdir={image.workdir}")
        if image.entrypoint:
            config += ["--clear=config.entrypoint"]
            config += [f"--config.entrypoint={arg}" for arg in image.entrypoint]
        if image.cmd:
            config += ["--clear=config.cmd"]
            config += [f"--config.cmd={arg}" for arg in image.cmd]
        _umoci(*config)
        _umoci("gc", "--layout", str(layout))
        # ctr import names an image by this annotation; umoci records only the tag.
        index_file = layout / "index.json"
        index = json.loads(index_file.read_text())
        for manifest in index["manifests"]:
            manifest.setdefault("annotations", {})["io.containerd.image.name"] = image.reference
        index_file.write_text(json.dumps(index))
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        with tarfile.open(staging, "w") as tar:
            tar.add(layout, arcname=".")
        staging.rename(target)


def _populate(image: Image, rootfs: Path) -> None:
    def inside(path: str) -> Path:
        return rootfs / path.lstrip("/")

    for path, (mode, uid, gid) in sorted(image.directories.items()):
        directory = inside(path)
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, uid, gid)
        directory.chmod(mode)
    for path, file in image.files.items():
        destination = inside(path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file.source, destination)
        destination.chmod(file.mode)
    for path, link_target in image.symlinks.items():
        link = inside(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(link_target)


def entrypoint_image(name: str) -> Image:
    """Busybox with an ENTRYPOINT that must run before the container's command, as
    eclipse-temurin's (under fabric-javaenv) does."""
    script = Path(__file__).resolve().parent / "entrypoint" / "ca-entrypoint.sh"
    busybox = busybox_image(name)
    return Image(
        name=name,
        files={**busybox.files, "/ca-entrypoint.sh": File(script)},
        symlinks=busybox.symlinks,
        directories=busybox.directories,
        entrypoint=("/ca-entrypoint.sh",),
    )


def busybox_image(name: str) -> Image:
    """A small image with a shell and core utilities: Debian's static busybox and its applets."""
    busybox = Path("/bin/busybox")
    listed = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    applets = {f"/{applet}": "/bin/busybox" for applet in listed if applet != "bin/busybox"}
    return Image(
        name=name,
        files={"/bin/busybox": File(busybox)},
        symlinks=applets,
        directories={"/tmp": (0o1777, 0, 0)},
        cmd=("sh",),
    )
