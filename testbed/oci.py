"""OCI images built on this machine, with no registry: a root filesystem made by mmdebstrap
from Debian's packages (or none, for images of a few host files), completed with files, trees
and users, packed by umoci (Debian's) into an OCI layout and tarred for `ctr images import`.

Root filesystems and archives are cached under ~/.cache/k8scc/{rootfs,images}, keyed by
everything that goes into them, so an unchanged image costs nothing on the next start.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testbed.binaries import cache_root

UMOCI = "/usr/bin/umoci"
MMDEBSTRAP = "/usr/bin/mmdebstrap"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class File:
    source: Path
    mode: int = 0o755


@dataclass(frozen=True)
class Tree:
    """A host directory copied whole; `version` stands for its content in the cache key, as
    hashing a toolchain's every file on each start would cost more than the copy."""

    source: Path
    version: str


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: str
    shell: str = "/bin/sh"


@dataclass(frozen=True)
class Debian:
    """A minimal Debian root filesystem of `suite` with `packages` and what they depend on."""

    suite: str
    packages: tuple[str, ...]

    def key(self) -> str:
        recipe = json.dumps([self.suite, sorted(self.packages), DEBIAN_MIRROR])
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Image:
    """`name` is repository:tag. Paths in the maps are absolute paths inside the image."""

    name: str
    base: Debian | None = None
    files: dict[str, File] = field(default_factory=dict)
    trees: dict[str, Tree] = field(default_factory=dict)
    users: tuple[User, ...] = ()
    symlinks: dict[str, str] = field(default_factory=dict)
    # directory -> (mode, uid, gid)
    directories: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    workdir: str = ""
    # Run on the finished root filesystem before packing (warming caches, say); `prepared`
    # stands for what it does in the cache key.
    prepare: Callable[[Path], None] | None = None
    prepared: str = ""

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]

    @property
    def reference(self) -> str:
        return reference(self.name)

    def key(self) -> str:
        digest = hashlib.sha256()
        recipe = {
            "name": self.name,
            "base": self.base.key() if self.base else None,
            "trees": {p: [str(t.source), t.version] for p, t in sorted(self.trees.items())},
            "users": [[u.name, u.uid, u.home, u.shell] for u in self.users],
            "files": {p: [f.mode, _file_digest(f.source)] for p, f in sorted(self.files.items())},
            "symlinks": sorted(self.symlinks.items()),
            "directories": sorted(self.directories.items()),
            "config": [self.user, self.entrypoint, self.cmd, self.env, self.workdir],
            "prepared": self.prepared,
        }
        digest.update(json.dumps(recipe, sort_keys=True).encode())
        return digest.hexdigest()[:16]


def reference(name: str) -> str:
    """The name as the kubelet asks containerd for it (Docker's normalisation)."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, made by `build(staging path)` under a lock unless the cache holds it."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            staging = target.with_name(f".{target.name}.{os.getpid()}")
            try:
                build(staging)
                staging.rename(target)
            finally:
                staging.unlink(missing_ok=True)
    return target


def debian_rootfs(base: Debian) -> Path:
    """The root filesystem as a tarball, made by mmdebstrap unless the cache holds it."""
    target = cache_root() / "rootfs" / f"{base.suite}-{base.key()}.tar"

    def build(staging: Path) -> None:
        print(
            f"testbed: making a Debian {base.suite} root with {', '.join(base.packages)}",
            file=sys.stderr,
            flush=True,
        )
        include = f"--include={','.join(base.packages)}"
        argv = [MMDEBSTRAP, "--mode=root", "--variant=minbase", "--quiet", include]
        argv += ["--format=tar", base.suite, str(staging), DEBIAN_MIRROR]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"mmdebstrap {base.suite} failed: {result.stderr.strip()[-2000:]}")

    return cached(target, build)


def archive(image: Image) -> Path:
    """The image as an OCI layout tarball, built if the cache does not hold it."""
    slug = image.repository.replace("/", "_")
    target = cache_root() / "images" / f"{slug}-{image.tag}-{image.key()}.tar"
    base = debian_rootfs(image.base) if image.base else None
    return cached(target, lambda staging: _build(image, base, staging))


def manifest_digest(archive_path: Path) -> str:
    """The digest of the image's manifest in `archive_path`: what a registry serves it by, and
    what `name@digest` names."""
    with tarfile.open(archive_path) as tar:
        member = tar.extractfile("./index.json")
        assert member is not None, f"{archive_path}: index.json is not a file"
        [manifest] = json.loads(member.read())["manifests"]
    return str(manifest["digest"])


def _umoci(*args: str) -> None:
    result = subprocess.run([UMOCI, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"umoci {args[0]} failed: {result.stderr.strip()}")


def _build(image: Image, base: Path | None, target: Path) -> None:
    print(f"testbed: building image {image.name}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="k8scc-image-") as scratch:
        layout, bundle = Path(scratch) / "layout", Path(scratch) / "bundle"
        ref = f"{layout}:{image.tag}"
        _umoci("init", "--layout", str(layout))
        _umoci("new", "--image", ref)
        _umoci("unpack", "--image", ref, str(bundle))
        if base is not None:
            # GNU tar keeps what a root filesystem needs: owners, setuid bits, device nodes.
            argv = ["/usr/bin/tar", "-x", "--numeric-owner", "-f", str(base)]
            subprocess.run([*argv, "-C", str(bundle / "rootfs")], check=True)
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
        with tarfile.open(target, "w") as tar:
            tar.add(layout, arcname=".")


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
    for path, tree in image.trees.items():
        shutil.copytree(tree.source, inside(path), symlinks=True, dirs_exist_ok=True)
    _add_users(image.users, inside("/etc"))
    if image.prepare is not None:
        image.prepare(rootfs)


def chroot(rootfs: Path, script: str, what: str) -> None:
    """Runs `script` with /bin/sh inside `rootfs`, with the host's network and DNS, in a mount
    namespace of its own so that /dev and /proc vanish with it whatever happens."""
    resolv = rootfs / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text(Path("/etc/resolv.conf").read_text())
    setup = (
        'mount --rbind /dev "$1/dev" && mount -t proc proc "$1/proc"'
        ' && exec chroot "$1" /bin/sh -c "$2"'
    )
    argv = ["/usr/bin/unshare", "--mount", "--propagation", "private", "--fork"]
    argv += ["/bin/sh", "-c", setup, "chroot", str(rootfs), script]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    resolv.unlink()
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise RuntimeError(f"{what} failed: {output}")


def _add_users(users: tuple[User, ...], etc: Path) -> None:
    """Appends passwd and group entries (group id = user id), as `useradd` would."""
    if not users:
        return
    etc.mkdir(parents=True, exist_ok=True)
    with (etc / "passwd").open("a") as passwd, (etc / "group").open("a") as group:
        for user in users:
            passwd.write(f"{user.name}:x:{user.uid}:{user.uid}::{user.home}:{user.shell}\n")
            group.write(f"{user.name}:x:{user.uid}:\n")


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
