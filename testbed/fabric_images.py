"""Images that behave like Fabric's chaincode images, built here from Debian's packages with
scripts of our own under testbed/fabric_images, and tagged with the real names so that k8scc's
defaults pull them:

- fabric-ccenv: Go on PATH at /usr/local/go/bin with GOTOOLCHAIN=local, a C toolchain for
  static links, user `chaincode` (500), `/chaincode/{input,output}` owned by it;
- fabric-baseos: a shell and nothing else, user `chaincode`;
- fabric-nodeenv: Node.js, npm and a native toolchain, no USER (root), `/chaincode/build.sh`,
  `/chaincode/start.sh`, root-owned `/chaincode/{input,output}` and `/usr/local/src`;
- fabric-javaenv: a Java 21 JDK, no USER (root), WORKDIR `/root/chaincode-java`, and under
  `/root` (0700, root's) the build and start scripts, Maven and Gradle wrappers, the shim's
  jars in `lib/` and a Maven repository warmed for offline builds; no `mvn` or `gradle` on PATH.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from testbed import oci, tools
from testbed.binaries import cache_root

SCRIPTS = Path(__file__).resolve().parent / "fabric_images"
SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "chaincode"
SYSTEM_PATH = tools.SYSTEM_PATH
CHAINCODE = oci.User("chaincode", 500, "/home/chaincode")
NODE = oci.User("node", 1000, "/home/node")
# Maven Central serves Maven itself; the wrapper properties name the same release.
MAVEN_VERSION = "3.9.16"
MAVEN_URL = (
    "https://repo.maven.apache.org/maven2/org/apache/maven/apache-maven/"
    f"{MAVEN_VERSION}/apache-maven-{MAVEN_VERSION}-bin.tar.gz"
)
CHAINCODE_JAVA = Path("/root/chaincode-java")
# Local certificate authorities of the host (this machine reaches registries through a proxy
# that presents its own): images that download trust them, as an operator's would.
HOST_CAS = Path("/usr/local/share/ca-certificates")


def host_cas() -> dict[str, oci.File]:
    found = sorted(HOST_CAS.glob("*.crt")) if HOST_CAS.is_dir() else []
    return {f"{HOST_CAS}/{path.name}": oci.File(path, 0o644) for path in found}


def names(image: str, versions: tuple[str, ...]) -> tuple[str, ...]:
    """Every tag under which the peer's defaults ask for `image`."""
    return tuple(f"hyperledger/fabric-{image}:{version}" for version in versions)


def _go_tree() -> oci.Tree:
    go = tools.go()
    version = subprocess.run(
        [str(go), "version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return oci.Tree(go.parent.parent, version)


def ccenv(name: str) -> oci.Image:
    return oci.Image(
        name=name,
        base=oci.Debian("bookworm", ("gcc", "libc6-dev", "ca-certificates")),
        files=host_cas(),
        trees={"/usr/local/go": _go_tree()},
        users=(CHAINCODE,),
        directories={
            CHAINCODE.home: (0o755, 500, 500),
            "/chaincode/input": (0o755, 500, 500),
            "/chaincode/output": (0o755, 500, 500),
        },
        user="chaincode",
        # As golang images say (ccenv is built on one): no toolchain switch unless asked.
        env=(f"PATH=/usr/local/go/bin:{SYSTEM_PATH}", "GOTOOLCHAIN=local"),
        prepare=trust_host_cas,
        prepared="update-ca-certificates",
    )


def baseos(name: str) -> oci.Image:
    busybox = oci.busybox_image(name)
    return oci.Image(
        name=name,
        files=busybox.files,
        symlinks=busybox.symlinks,
        users=(oci.User("root", 0, "/root"), CHAINCODE),
        directories={
            **busybox.directories,
            "/root": (0o700, 0, 0),
            CHAINCODE.home: (0o755, 500, 500),
            "/usr/local/bin": (0o755, 0, 0),
        },
        user="chaincode",
    )


def nodeenv(name: str) -> oci.Image:
    scripts = SCRIPTS / "nodeenv"
    return oci.Image(
        name=name,
        base=oci.Debian("trixie", ("nodejs", "npm", "python3", "make", "g++")),
        files={
            "/chaincode/build.sh": oci.File(scripts / "build.sh"),
            "/chaincode/start.sh": oci.File(scripts / "start.sh"),
            **host_cas(),
        },
        users=(NODE,),
        directories={
            NODE.home: (0o755, 1000, 1000),
            "/chaincode/input": (0o755, 0, 0),
            "/chaincode/output": (0o755, 0, 0),
            "/usr/local/src": (0o755, 0, 0),
        },
        # Node.js keeps a CA list of its own unless told of the system's.
        env=(f"PATH={SYSTEM_PATH}", "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"),
        prepare=trust_host_cas,
        prepared="update-ca-certificates",
    )


def javaenv(name: str) -> oci.Image:
    scripts = SCRIPTS / "javaenv"
    files = host_cas() | {
        f"{CHAINCODE_JAVA}/{path.relative_to(scripts)}": oci.File(
            path, 0o755 if path.stat().st_mode & 0o100 else 0o644
        )
        for path in sorted(scripts.rglob("*"))
        if path.is_file()
    }
    sample = SAMPLES / "java" / "pom.xml"
    return oci.Image(
        name=name,
        base=oci.Debian("trixie", ("openjdk-21-jdk-headless", "ca-certificates-java")),
        files=files,
        trees={f"/root/.m2/wrapper/dists/apache-maven-{MAVEN_VERSION}": _maven_tree()},
        directories={"/root": (0o700, 0, 0), str(CHAINCODE_JAVA / "lib"): (0o755, 0, 0)},
        workdir=str(CHAINCODE_JAVA),
        prepare=_prepare_javaenv,
        prepared=f"warm {hashlib.sha256(sample.read_bytes()).hexdigest()[:16]}",
    )


def _maven_tree() -> oci.Tree:
    """Maven's own distribution, from Maven Central, checked against its published SHA-512."""
    unpacked = cache_root() / "downloads" / f"apache-maven-{MAVEN_VERSION}"
    if not (unpacked / "bin" / "mvn").is_file():
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        data = _fetch(MAVEN_URL)
        expected = _fetch(f"{MAVEN_URL}.sha512").decode().split()[0]
        if hashlib.sha512(data).hexdigest() != expected:
            raise RuntimeError(f"{MAVEN_URL}: SHA-512 does not match the published one")
        with tempfile.TemporaryDirectory(dir=unpacked.parent) as scratch:
            archive = Path(scratch) / "maven.tar.gz"
            archive.write_bytes(data)
            # tar(1): tarfile's extraction filters are missing from some 3.10/3.11 releases
            # (Debian bookworm's 3.11.2 among them), the Python a fresh machine has.
            subprocess.run(
                ["tar", "-xzf", str(archive), "-C", scratch, "--no-same-owner"], check=True
            )
            (Path(scratch) / f"apache-maven-{MAVEN_VERSION}").rename(unpacked)
    return oci.Tree(unpacked, MAVEN_VERSION)


def trust_host_cas(rootfs: Path) -> None:
    oci.chroot(rootfs, "update-ca-certificates", "adding the host's certificate authorities")


def _fetch(url: str) -> bytes:
    if not url.startswith("https://"):
        raise ValueError(f"not an https URL: {url}")
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (https only)
        return bytes(response.read())


def _prepare_javaenv(rootfs: Path) -> None:
    """Trusts the host's CAs, then builds the Java sample once inside the image, as its
    build.sh would, so that its dependencies and plugins are in /root/.m2; copies the shim's
    jars into lib/."""
    trust_host_cas(rootfs)
    warm = rootfs / "tmp" / "k8scc-warm"
    subprocess.run(["cp", "-R", str(SAMPLES / "java"), str(warm)], check=True)
    maven = f"/root/.m2/wrapper/dists/apache-maven-{MAVEN_VERSION}/bin/mvn -B -q"
    try:
        oci.chroot(
            rootfs,
            f"export HOME=/root && cd /tmp/k8scc-warm"
            f" && {maven} compile package -DskipTests -Dmaven.test.skip=true"
            f" && {maven} dependency:copy-dependencies -DincludeScope=runtime"
            f" -DexcludeArtifactIds=json -DoutputDirectory={CHAINCODE_JAVA}/lib",
            "warming the javaenv Maven repository",
        )
    finally:
        subprocess.run(["rm", "-rf", str(warm)], check=True)


def fabric_images(
    fabric_versions: tuple[str, ...] = ("2.5", "3.1"),
) -> list[tuple[oci.Image, tuple[str, ...]]]:
    """Each image with the further names it is tagged with."""
    env_versions = ("2.5",)
    built = []
    for image, versions in (
        (ccenv, fabric_versions),
        (baseos, fabric_versions),
        (nodeenv, env_versions),
        (javaenv, env_versions),
    ):
        all_names = names(image.__name__, versions)
        built.append((image(all_names[0]), all_names[1:]))
    return built
