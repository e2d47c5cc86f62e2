"""Bad input to bin/build and bin/run, driven as the peer drives them. Every case is held to the
same contract: a non-zero exit, exactly one error line naming the problem and no traceback,
BUILD_OUTPUT_DIR left empty, no pods or Secrets in the namespace and nothing on the transfer
volume. Valid but awkward Fabric labels must build. Run with -s to see how long each failure
took to be reported."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client

from k8scc import __version__
from k8scc.buildinfo import BuildInfo
from testbed.cluster import Testbed
from tests.cluster.test_steps import wait_clean
from tests.support.builder import Builder, make_builder
from tests.unit.helpers import PeerTls, is_dns_label, peer_tls

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

CHAINCODE_ID = f"asset_1.0:{'ab' * 32}"
NODE_PACKAGE = {"name": "bad-input", "version": "1.0.0", "private": True}
# k8scc's own line prefix; pod output it forwards carries "| " after it.
ERROR_LINE = re.compile(r"^k8scc (build|run)( \[[^]]*\])?: error: ")

# bad input -> seconds until the step exited, printed when the module ends.
SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def report_seconds() -> Iterator[None]:
    yield
    if SECONDS:
        width = max(map(len, SECONDS))
        print(f"\n{'bad input':<{width}}  seconds until exit")
        for case, seconds in SECONDS.items():
            print(f"{case:<{width}}  {seconds:6.2f}")


@pytest.fixture(scope="module")
def tls() -> PeerTls:
    return peer_tls()


@dataclass
class Scene:
    """What every case needs: the installed builder and a way to look at the cluster."""

    builder: Builder
    admin: Client
    namespace: str
    workdir: Path

    def call(
        self, step: str, args: Sequence[Path], prefix: Sequence[str] = ()
    ) -> tuple[subprocess.CompletedProcess[str], float]:
        """The step as the peer runs it (positional arguments, pruned environment), optionally
        under a wrapper that changes only what the step sees of the transfer volume."""
        started = time.monotonic()
        result = subprocess.run(
            [*prefix, self.builder.program(step), *map(str, args)],
            env=self.builder.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        return result, time.monotonic() - started

    def refused(
        self,
        case: str,
        step: str,
        args: Sequence[Path],
        problem: str,
        prefix: Sequence[str] = (),
        volume_after: Path | None = None,
    ) -> str:
        """Runs the step and checks the bad-input contract; `problem` is a regex the error line
        must match. `volume_after` holds what a wrapper saw on a volume only it could see."""
        result, seconds = self.call(step, args, prefix)
        SECONDS[case] = seconds
        assert result.returncode != 0, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1, result.stderr
        [line] = errors
        assert ERROR_LINE.match(line), line
        assert re.search(problem, line), line
        if step == "build":
            assert list(args[2].iterdir()) == [], "BUILD_OUTPUT_DIR was written"
        if volume_after is not None:
            assert volume_after.read_text().split() == [], "left on the volume"
        assert wait_clean(self.admin, self.namespace, self.builder.transfer) == []
        return line


@pytest.fixture
def scene(builder: Builder, admin: Client, namespace: str, tmp_path: Path) -> Scene:
    return Scene(builder, admin, namespace, tmp_path)


def node_package(
    workdir: Path, label: str = "bad_input", package: dict[str, Any] | None = None
) -> tuple[Path, Path, Path]:
    """CHAINCODE_SOURCE_DIR, CHAINCODE_METADATA_DIR and an empty BUILD_OUTPUT_DIR for a node
    chaincode without dependencies: the fastest real build."""
    source = workdir / "src-dir"
    (source / "src").mkdir(parents=True)
    (source / "src" / "package.json").write_text(json.dumps(package or NODE_PACKAGE))
    (source / "src" / "index.js").write_text("module.exports = {};\n")
    metadata = write_metadata(workdir / "metadata", {"type": "node", "label": label, "path": ""})
    output = workdir / "bld"
    output.mkdir()
    return source, metadata, output


def write_metadata(directory: Path, content: Any) -> Path:
    directory.mkdir(exist_ok=True)
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    (directory / "metadata.json").write_bytes(raw)
    return directory


# --- metadata.json -----------------------------------------------------------------------------


def test_missing_metadata_json(scene: Scene) -> None:
    source, metadata, output = node_package(scene.workdir)
    (metadata / "metadata.json").unlink()
    scene.refused("metadata.json missing", "build", [source, metadata, output], "not found")


@pytest.mark.parametrize(
    ("case", "content", "problem"),
    [
        ("not JSON", b'{"type": "node", "label": ', "not valid JSON"),
        ("not UTF-8", b'{"type": "\xff\xfe"}', "not valid JSON"),
        ("JSON array", b'["node"]', "must be a JSON object"),
        ("JSON string", b'"node"', "must be a JSON object"),
        ("type missing", {"label": "cc", "path": ""}, "field 'type' is missing"),
        ("type a number", {"type": 7, "label": "cc"}, "field 'type' is a number"),
        ("label a list", {"type": "node", "label": ["cc"]}, "field 'label' is an array"),
        (
            "path an object",
            {"type": "node", "label": "cc", "path": {}},
            "field 'path' is an object",
        ),
        ("label with /", {"type": "node", "label": "a/b"}, "not a valid Fabric package label"),
        ("label with space", {"type": "node", "label": "a b"}, "not a valid Fabric package label"),
        ("label starting with +", {"type": "node", "label": "+a"}, "not a valid Fabric"),
        ("unknown type cobol", {"type": "cobol", "label": "cc"}, "type 'cobol' is not one"),
        ("empty type", {"type": "", "label": "cc"}, "type '' is not one"),
    ],
)
def test_malformed_metadata_json(scene: Scene, case: str, content: Any, problem: str) -> None:
    source, metadata, output = node_package(scene.workdir)
    write_metadata(metadata, content)
    scene.refused(f"metadata.json: {case}", "build", [source, metadata, output], problem)


# --- chaincode.json ----------------------------------------------------------------------------


def fake_build_output(workdir: Path) -> Path:
    """A BUILD_OUTPUT_DIR as `build` leaves it for a node chaincode."""
    output = workdir / "bld"
    (output / "output").mkdir(parents=True)
    (output / "output" / "package.json").write_text(json.dumps(NODE_PACKAGE))
    BuildInfo(
        platform="node",
        build_image="hyperledger/fabric-nodeenv:2.5",
        run_image="hyperledger/fabric-nodeenv:2.5",
        label="asset_1.0",
        k8scc_version=__version__,
    ).write(output)
    return output


def chaincode_json(tls: PeerTls | None, **changes: Any) -> dict[str, Any]:
    """What the peer writes, with `changes` applied; a change to None drops the field."""
    content: dict[str, Any] = {
        "chaincode_id": CHAINCODE_ID,
        "peer_address": "127.0.0.1:7052",
        "client_cert": tls.client_cert if tls else "",
        "client_key": tls.client_key if tls else "",
        "root_cert": tls.root_cert if tls else "",
        "mspid": "Org1MSP",
    }
    content.update(changes)
    return {key: value for key, value in content.items() if value is not None}


def write_run_metadata(workdir: Path, content: Any) -> Path:
    directory = workdir / "run"
    directory.mkdir(exist_ok=True)
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    (directory / "chaincode.json").write_bytes(raw)
    return directory


def test_missing_chaincode_json(scene: Scene) -> None:
    output = fake_build_output(scene.workdir)
    run = scene.workdir / "run"
    run.mkdir()
    scene.refused("chaincode.json missing", "run", [output, run], "chaincode.json not found")


def _key_body(tls: PeerTls) -> str:
    return "".join(line for line in tls.client_key.splitlines() if not line.startswith("-----"))


CHAINCODE_CASES: list[tuple[str, Any, str]] = [
    ("not JSON", b"chaincode_id=asset", "not valid JSON"),
    ("JSON list", b"[]", "must be a JSON object"),
    ("empty file", b"", "not valid JSON"),
    ("chaincode_id missing", {"chaincode_id": None}, "field 'chaincode_id' is missing"),
    ("chaincode_id without hash", {"chaincode_id": "asset_1.0"}, "is not <label>:<sha256 hex>"),
    ("peer_address missing", {"peer_address": None}, "field 'peer_address' is missing"),
    ("peer_address a URL", {"peer_address": "grpcs://peer0:7052"}, "is not host:port"),
    ("peer_address a number", {"peer_address": 7052}, "field 'peer_address' is a number"),
    ("mspid missing", {"mspid": None}, "field 'mspid' is missing"),
    ("client_cert missing (TLS on)", {"client_cert": None}, "must be all set or all empty"),
    ("client_key missing (TLS on)", {"client_key": None}, "must be all set or all empty"),
    ("root_cert missing (TLS on)", {"root_cert": None}, "must be all set or all empty"),
    ("client_key not PEM", {"client_key": "MHcCAQEEIOa"}, "'client_key' is not a PEM private key"),
    ("root_cert not PEM", {"root_cert": "just text"}, "'root_cert' is not a PEM CERTIFICATE"),
]


@pytest.mark.parametrize(("case", "changes", "problem"), CHAINCODE_CASES)
def test_malformed_chaincode_json(
    scene: Scene, tls: PeerTls, case: str, changes: Any, problem: str
) -> None:
    content = changes if isinstance(changes, bytes) else chaincode_json(tls, **changes)
    run = write_run_metadata(scene.workdir, content)
    output = fake_build_output(scene.workdir)
    line = scene.refused(f"chaincode.json: {case}", "run", [output, run], problem)
    assert _key_body(tls)[:16] not in line


KEY_CASES = {
    # PEM, but of the wrong kind: a certificate or a public key where the key belongs.
    "client_key a certificate": "cert",
    "client_key a public key": "-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n",
    # The peer's `EC PRIVATE KEY` header quirk kept, the rest mangled.
    "client_key body not base64": (
        "-----BEGIN EC PRIVATE KEY-----\n%%%not base64%%%\n-----END EC PRIVATE KEY-----\n"
    ),
    "client_key without footer": "-----BEGIN EC PRIVATE KEY-----\n{body}\n",
    "client_key footer of another kind": (
        "-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END CERTIFICATE-----\n"
    ),
}


@pytest.mark.parametrize(("case", "key"), KEY_CASES.items(), ids=KEY_CASES.keys())
def test_client_key_in_an_unexpected_format(
    scene: Scene, tls: PeerTls, case: str, key: str
) -> None:
    client_key = tls.client_cert if key == "cert" else key.format(body=_key_body(tls))
    run = write_run_metadata(scene.workdir, chaincode_json(tls, client_key=client_key))
    output = fake_build_output(scene.workdir)
    line = scene.refused(
        f"chaincode.json: {case}", "run", [output, run], "'client_key' is not a PEM private key"
    )
    assert _key_body(tls)[:16] not in line


# --- valid but awkward Fabric labels ---------------------------------------------------------

AWKWARD_LABELS = {
    "plus": "asset+v1",
    "dots": "asset.v1.0",
    "underscores": "asset_transfer_1",
    "capitals": "AssetTransfer",
    "255 characters": "A" + "b_.+-C9" * 36 + "z" * 2,
}


@pytest.mark.parametrize("label", AWKWARD_LABELS.values(), ids=AWKWARD_LABELS.keys())
def test_awkward_labels_render_valid_names(scene: Scene, label: str) -> None:
    """The builder pod k8scc would create for the label, through `k8scc render build`."""
    source, metadata, _ = node_package(scene.workdir, label=label)
    rendered = subprocess.run(
        [
            sys.executable,
            "-m",
            "k8scc",
            "render",
            "build",
            "--config",
            str(scene.builder.directory / "k8scc.yaml"),
            str(source),
            str(metadata),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    [pod] = list(yaml.safe_load_all(rendered.stdout))
    meta = pod["metadata"]
    assert is_dns_label(meta["name"]), meta["name"]
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower())
    assert meta["name"].startswith(f"ccbuild-{slug[:20]}"), meta["name"]
    for value in meta["labels"].values():
        assert is_dns_label(value), value
    readable = slug.strip("-")[:63].strip("-")
    assert meta["labels"]["k8scc.hyperledger.org/chaincode-label"] == readable
    assert meta["annotations"]["k8scc.hyperledger.org/label"] == label


def test_a_255_character_label_with_every_special_character_builds(scene: Scene) -> None:
    label = AWKWARD_LABELS["255 characters"]
    assert len(label) == 255
    source, metadata, output = node_package(scene.workdir, label=label)
    result, seconds = scene.call("build", [source, metadata, output])
    SECONDS["valid 255-character label (build succeeds)"] = seconds
    assert result.returncode == 0, result.stderr
    [pod] = set(re.findall(r"pod=([^\] ]+)", result.stderr))
    assert is_dns_label(pod) and len(pod) == 63, pod
    assert pod.startswith("ccbuild-ab-c9b-c9b-"), pod
    assert json.loads((output / "k8scc-build.json").read_text())["label"] == label
    assert (output / "output" / "package.json").is_file()
    assert wait_clean(scene.admin, scene.namespace, scene.builder.transfer) == []


# --- special files in the source and in the build output -------------------------------------


def _escaping_symlink(src: Path) -> str:
    (src / "up").symlink_to("../../..")
    return "symlink src/up points outside"


def _absolute_symlink(src: Path) -> str:
    (src / "passwd").symlink_to("/etc/passwd")
    return "symlink src/passwd points outside"


def _nested_escaping_symlink(src: Path) -> str:
    (src / "lib").mkdir()
    (src / "lib" / "sneaky").symlink_to("../../../etc")
    return "symlink src/lib/sneaky points outside"


def _fifo(src: Path) -> str:
    os.mkfifo(src / "pipe")
    return "src/pipe is not a regular file or directory"


def _socket(src: Path) -> str:
    # Creating a device node needs CAP_MKNOD, which a peer's builder never has; a Unix socket
    # is the special file any user can make, and it takes the same path through k8scc.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "sock"))
    return "src/sock is not a regular file or directory"


def _device(src: Path) -> str:
    # Any user may make a 0:0 character device (the kernel lets overlay whiteouts be created
    # without CAP_MKNOD); other device numbers need root.
    os.mknod(src / "dev", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    return "src/dev is not a regular file or directory"


SOURCE_SPECIALS = {
    "escaping symlink": _escaping_symlink,
    "absolute symlink": _absolute_symlink,
    "nested escaping symlink": _nested_escaping_symlink,
    "FIFO": _fifo,
    "socket": _socket,
    "character device": _device,
}


@pytest.mark.parametrize(("case", "special"), SOURCE_SPECIALS.items(), ids=SOURCE_SPECIALS.keys())
def test_special_files_in_the_source(
    scene: Scene, case: str, special: Callable[[Path], str]
) -> None:
    source, metadata, output = node_package(scene.workdir)
    problem = re.escape(f"chaincode source: {special(source / 'src')}")
    scene.refused(f"source: {case}", "build", [source, metadata, output], problem)


def test_a_relative_symlink_inside_the_source_is_kept(scene: Scene) -> None:
    """Relative links that stay inside are what the peer itself accepts; the link, not its
    target, is copied, so the build sees exactly the tree the package holds."""
    source, metadata, output = node_package(scene.workdir)
    (source / "src" / "main.js").symlink_to("index.js")
    result, _ = scene.call("build", [source, metadata, output])
    assert result.returncode == 0, result.stderr
    assert os.readlink(output / "output" / "main.js") == "index.js"
    assert wait_clean(scene.admin, scene.namespace, scene.builder.transfer) == []


OUTPUT_SPECIALS = {
    "FIFO": ("mkfifo pipe", "build output: pipe is not a regular file or directory"),
    "escaping symlink": ("ln -s ../../.. up", "build output: symlink up points outside"),
    "absolute symlink": ("ln -s /etc/passwd passwd", "build output: symlink passwd points"),
}


@pytest.mark.parametrize(
    ("case", "command", "problem"),
    [(case, *rest) for case, rest in OUTPUT_SPECIALS.items()],
    ids=OUTPUT_SPECIALS.keys(),
)
def test_special_files_in_the_build_output(
    scene: Scene, case: str, command: str, problem: str
) -> None:
    """npm runs the package's own postinstall script in the builder pod, in the output dir."""
    package = {**NODE_PACKAGE, "scripts": {"postinstall": command}}
    source, metadata, output = node_package(scene.workdir, package=package)
    scene.refused(f"build output: {case}", "build", [source, metadata, output], re.escape(problem))


# --- a very large source tree ------------------------------------------------------------------

LARGE_FILES = 200
LARGE_FILE_BYTES = 1 << 20


def test_a_200_megabyte_source_tree_builds_and_leaves_nothing_behind(scene: Scene) -> None:
    """k8scc sets no size limit of its own: the volume's capacity is the limit (see the full
    volume case below), so a large tree must simply work."""
    source, metadata, output = node_package(scene.workdir)
    blobs = source / "src" / "blobs"
    blobs.mkdir()
    for index in range(LARGE_FILES):
        (blobs / f"{index:03}.bin").write_bytes(os.urandom(LARGE_FILE_BYTES))
    result, seconds = scene.call("build", [source, metadata, output])
    SECONDS["200 MB source tree (build succeeds)"] = seconds
    assert result.returncode == 0, result.stderr
    built = sorted((output / "output" / "blobs").iterdir())
    assert len(built) == LARGE_FILES
    assert built[-1].read_bytes() == (blobs / built[-1].name).read_bytes()
    assert wait_clean(scene.admin, scene.namespace, scene.builder.transfer) == []


# --- a full or read-only transfer volume -------------------------------------------------------


def private_volume(scene: Scene, mount: str) -> tuple[list[str], Path]:
    """A wrapper that runs the step in a mount namespace of its own, where `mount` (a shell
    command on "$v") changes the transfer volume, and lists the volume after the step so the
    test sees what was left on it. User namespaces make this work without root."""
    listing = scene.workdir / "volume-after"
    script = (
        f'v="$1"; out="$2"; shift 2; {mount} || exit 99; '
        '"$@"; code=$?; ls -A "$v" > "$out"; exit $code'
    )
    volume = str(scene.builder.transfer)
    prefix = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]
    return [*prefix, volume, str(listing)], listing


def step_arguments(scene: Scene, step: str, blob: int = 0) -> list[Path]:
    """Valid arguments for `step`; `blob` bytes of random data make the tree that large."""
    if step == "build":
        source, metadata, output = node_package(scene.workdir)
        (source / "src" / "blob.bin").write_bytes(os.urandom(blob))
        return [source, metadata, output]
    output = fake_build_output(scene.workdir)
    (output / "output" / "blob.bin").write_bytes(os.urandom(blob))
    return [output, write_run_metadata(scene.workdir, chaincode_json(None))]


@pytest.mark.parametrize("step", ["build", "run"])
def test_full_transfer_volume(scene: Scene, step: str) -> None:
    """A 1 MiB tmpfs over the volume: 4 MiB to stage cannot fit (ENOSPC), as on a full PVC."""
    prefix, listing = private_volume(scene, 'mount -t tmpfs -o size=1m tmpfs "$v"')
    scene.refused(
        f"transfer volume full ({step})",
        step,
        step_arguments(scene, step, blob=4 << 20),
        "the transfer volume is full",
        prefix=prefix,
        volume_after=listing,
    )


@pytest.mark.parametrize("step", ["build", "run"])
def test_read_only_transfer_volume(scene: Scene, step: str) -> None:
    """A read-only bind mount (EROFS): what a PVC mounted readOnly gives. chmod 0555 would not
    stop a step running as root, as the peer often does."""
    prefix, listing = private_volume(
        scene, 'mount --bind "$v" "$v" && mount -o remount,bind,ro "$v"'
    )
    scene.refused(
        f"transfer volume read-only ({step})",
        step,
        step_arguments(scene, step),
        "the transfer volume is read-only",
        prefix=prefix,
        volume_after=listing,
    )


def test_transfer_volume_not_mounted(testbed: Testbed, scene: Scene) -> None:
    elsewhere = scene.workdir / "not-mounted"
    builder = make_builder(
        testbed,
        scene.namespace,
        scene.builder.transfer,
        scene.workdir,
        {"transfer": {"claimName": "transfer", "mountPath": str(elsewhere)}},
    )
    configured = Scene(builder, scene.admin, scene.namespace, scene.workdir)
    configured.refused(
        "transfer volume not mounted",
        "build",
        step_arguments(configured, "build"),
        f"transfer volume is not mounted at {re.escape(str(elsewhere))}",
    )


# --- the directories the peer passes ----------------------------------------------------------


def test_source_directory_missing(scene: Scene) -> None:
    source, metadata, output = node_package(scene.workdir)
    missing = source / "gone"
    scene.refused(
        "CHAINCODE_SOURCE_DIR missing",
        "build",
        [missing, metadata, output],
        "chaincode source: .*gone is not a directory",
    )


def test_build_output_not_from_k8scc(scene: Scene) -> None:
    output = scene.workdir / "bld"
    (output / "output").mkdir(parents=True)
    run = write_run_metadata(scene.workdir, chaincode_json(None))
    scene.refused(
        "BUILD_OUTPUT_DIR not built by k8scc",
        "run",
        [output, run],
        "k8scc-build.json not found: this package was not built by k8scc",
    )


# --- the configuration -------------------------------------------------------------------------


def test_missing_config_file(scene: Scene) -> None:
    (scene.builder.directory / "k8scc.yaml").unlink()
    source, metadata, output = node_package(scene.workdir)
    scene.refused(
        "config file missing",
        "build",
        [source, metadata, output],
        r"configuration file .*k8scc\.yaml not found",
    )


CONFIG_CASES: dict[str, tuple[dict[str, Any] | str, str]] = {
    "bad quantity": (
        {"builder": {"resources": {"limits": {"memory": "2GB"}}}},
        "builder.resources.limits.memory: invalid quantity '2GB'",
    ),
    "bad cpu quantity": (
        {"chaincode": {"resources": {"requests": {"cpu": "half"}}}},
        "chaincode.resources.requests.cpu: invalid quantity 'half'",
    ),
    "unknown top-level key": ({"namespaces": ["x"]}, "namespaces: unknown key"),
    "unknown nested key": ({"timeouts": {"stcuk": "5s"}}, r"timeouts\.stcuk: unknown key"),
    "wrong type (mapping)": ({"peer": "peer0"}, "peer: expected a mapping, got a string"),
    "wrong type (boolean)": (
        {"peer": {"id": "peer0", "ownerReferences": "yes"}},
        "peer.ownerReferences: expected a boolean, got a string",
    ),
    "wrong type (integer)": (
        {"chaincode": {"terminationGracePeriodSeconds": "30"}},
        "chaincode.terminationGracePeriodSeconds: expected an integer, got a string",
    ),
    "user id as a string": (
        {"platforms": {"node": {"runAsUser": "1000"}}},
        "platforms.node.runAsUser: must be a user id or \"image\", not '1000'",
    ),
    "bad duration": ({"timeouts": {"stuck": "5 sec"}}, "timeouts.stuck: invalid duration"),
    "negative duration": ({"timeouts": {"start": -1}}, "timeouts.start: must be positive"),
    "root uid": ({"platforms": {"node": {"runAsUser": 0}}}, "runAsUser: must be a non-zero"),
    "not YAML": ("namespace: [unclosed\n", "not valid YAML"),
    "YAML list": ("- namespace\n", "top level: expected a mapping, got a list"),
}


@pytest.mark.parametrize(
    ("case", "change", "problem"),
    [(case, *rest) for case, rest in CONFIG_CASES.items()],
    ids=CONFIG_CASES.keys(),
)
def test_invalid_config_values(
    testbed: Testbed, scene: Scene, case: str, change: dict[str, Any] | str, problem: str
) -> None:
    workdir = scene.workdir / "configured"
    workdir.mkdir()
    if isinstance(change, str):
        builder = scene.builder
        (builder.directory / "k8scc.yaml").write_text(change)
    else:
        builder = make_builder(testbed, scene.namespace, scene.builder.transfer, workdir, change)
    configured = Scene(builder, scene.admin, scene.namespace, workdir)
    source, metadata, output = node_package(workdir)
    configured.refused(f"config: {case}", "build", [source, metadata, output], problem)
