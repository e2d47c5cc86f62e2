"""Packages of type `k8s`: image.json checked in one line per problem, build recording the image
with no pod (and leaving BUILD_OUTPUT_DIR empty when it cannot), and the chaincode pod that runs
the image with its own entrypoint, as its own non-root user, with no build output mounted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k8scc import buildinfo, config, configrecord, render
from k8scc.errors import K8sccError
from k8scc.metadata import ChaincodeJson
from k8scc.peer import Identity
from k8scc.platforms import PLATFORMS
from k8scc.prebuilt import read_image_json
from k8scc.steps import main
from tests.unit.helpers import restricted_violations

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
PACKAGE_ID = "prebuilt_1.0:" + "0" * 64


def package(tmp_path: Path, image: Any, kind: str = "k8s") -> tuple[Path, Path]:
    source, metadata = tmp_path / "src", tmp_path / "meta"
    (source / "META-INF" / "statedb" / "couchdb" / "indexes").mkdir(parents=True)
    (source / "META-INF" / "statedb" / "couchdb" / "indexes" / "owner.json").write_text("{}")
    text = image if isinstance(image, str) else json.dumps(image)
    (source / "image.json").write_text(text)
    metadata.mkdir()
    (metadata / "metadata.json").write_text(json.dumps({"type": kind, "label": "prebuilt_1.0"}))
    return source, metadata


@pytest.mark.parametrize(
    "name",
    [
        "chaincode",
        "ghcr.io/org/asset-transfer",
        "localhost:5000/k8scc/cc",
        "registry.example.com/a/b__c/d-e.f",
    ],
)
def test_a_name_and_digest_make_the_reference(tmp_path: Path, name: str) -> None:
    source, _ = package(tmp_path, {"name": name, "digest": DIGEST})
    assert read_image_json(source) == f"{name}@{DIGEST}"


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (
            {"name": "ghcr.io/org/cc", "tag": "1.0"},
            "image.json: field 'digest' is missing: a k8s package names its image by digest,"
            " not by tag '1.0', so that its package id stands for one image",
        ),
        ({"name": "ghcr.io/org/cc"}, "image.json: field 'digest' is missing"),
        ({"digest": DIGEST}, "image.json: field 'name' is missing"),
        ({"name": 7, "digest": DIGEST}, "image.json: field 'name' is a number, not a string"),
        (
            {"name": "ghcr.io/org/cc:1.0", "digest": DIGEST},
            "image.json: name 'ghcr.io/org/cc:1.0' is not an image repository without tag or"
            " digest (e.g. ghcr.io/org/chaincode)",
        ),
        (
            {"name": f"ghcr.io/org/cc@{DIGEST}", "digest": DIGEST},
            f"image.json: name 'ghcr.io/org/cc@{DIGEST}' is not an image repository without tag"
            " or digest (e.g. ghcr.io/org/chaincode)",
        ),
        (
            {"name": "ghcr.io/Org/cc", "digest": DIGEST},
            "image.json: name 'ghcr.io/Org/cc' is not an image repository without tag or digest"
            " (e.g. ghcr.io/org/chaincode)",
        ),
        (
            {"name": "cc", "digest": "sha256:abc"},
            "image.json: digest 'sha256:abc' is not sha256:<64 hex> or sha512:<128 hex>",
        ),
        (
            {"name": "cc", "digest": "ab" * 32},
            f"image.json: digest '{'ab' * 32}' is not sha256:<64 hex> or sha512:<128 hex>",
        ),
        ([{"name": "cc"}], "must be a JSON object"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_a_bad_image_json_is_one_clear_error(tmp_path: Path, image: Any, error: str) -> None:
    source, _ = package(tmp_path, image)
    with pytest.raises(K8sccError) as raised:
        read_image_json(source)
    assert error in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_package_without_image_json_says_so(tmp_path: Path) -> None:
    source, _ = package(tmp_path, {})
    (source / "image.json").unlink()
    with pytest.raises(K8sccError, match=r"^image\.json not found in the k8s package"):
        read_image_json(source)


def build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: Any, kind: str = "k8s"
) -> tuple[int, Path]:
    # No API server is configured: a k8s package's build must not need one.
    (tmp_path / "k8scc.yaml").write_text("kubeconfig: /nonexistent/kubeconfig\n")
    monkeypatch.setenv("K8SCC_CFGFILE", str(tmp_path / "k8scc.yaml"))
    source, metadata = package(tmp_path, image, kind)
    output = tmp_path / "bld"
    output.mkdir()
    return main("build", [str(source), str(metadata), str(output)], None), output


@pytest.mark.parametrize("kind", ["k8s", "K8S"])
def test_build_records_the_image_and_the_indexes_with_no_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    image = {"name": "ghcr.io/org/cc", "digest": DIGEST}
    status, output = build(tmp_path, monkeypatch, image, kind)
    assert status == 0, capsys.readouterr().err
    info = buildinfo.read(output)
    assert (info.platform, info.run_image, info.label) == (
        "k8s",
        f"ghcr.io/org/cc@{DIGEST}",
        "prebuilt_1.0",
    )
    assert (output / "META-INF/statedb/couchdb/indexes/owner.json").read_text() == "{}"
    assert sorted(p.name for p in output.iterdir()) == [
        "META-INF",
        buildinfo.FILE,
        configrecord.FILE,
    ]
    assert f"k8s package of image ghcr.io/org/cc@{DIGEST}: nothing to build" in (
        capsys.readouterr().err
    )


def test_a_failed_build_leaves_the_output_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, output = build(tmp_path, monkeypatch, {"name": "ghcr.io/org/cc", "tag": "latest"})
    assert status == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "error: image.json: field 'digest' is missing" in line
    assert list(output.iterdir()) == []


def chaincode_pod(text: str = "") -> dict[str, Any]:
    chaincode = ChaincodeJson(PACKAGE_ID, "peer0:7052", "", "", "", "Org1MSP")
    return render.chaincode_pod(
        config.parse(text),
        PLATFORMS["k8s"],
        f"ghcr.io/org/cc@{DIGEST}",
        chaincode,
        "cc-prebuilt",
        Identity("peer0"),
        "cc-prebuilt-00000000",
    )


def test_the_image_runs_its_own_entrypoint_as_its_own_non_root_user() -> None:
    pod = chaincode_pod()
    [box] = pod["spec"]["containers"]
    assert box["image"] == f"ghcr.io/org/cc@{DIGEST}"
    assert "args" not in box and "command" not in box and "workingDir" not in box
    env = {item["name"]: item["value"] for item in box["env"]}
    assert env["CORE_PEER_ADDRESS"] == "peer0:7052"
    assert env["CORE_CHAINCODE_ID_NAME"] == PACKAGE_ID
    # Nothing of a build to mount: the image holds its chaincode.
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["scratch"]
    assert pod["spec"]["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsNonRoot": True,
    }
    assert restricted_violations(pod) == []


def test_a_run_as_user_of_the_operators_choice_gives_ids() -> None:
    security = chaincode_pod("platforms: {k8s: {runAsUser: 4000}}")["spec"]["securityContext"]
    assert (security["runAsNonRoot"], security["runAsUser"], security["runAsGroup"]) == (
        True,
        4000,
        4000,
    )
    # "The image's own user" stays non-root for prebuilt images.
    image_user = chaincode_pod("platforms: {k8s: {runAsUser: image}}")["spec"]["securityContext"]
    assert image_user["runAsNonRoot"] is True and "runAsUser" not in image_user


def test_the_k8s_platform_takes_no_images_of_its_own() -> None:
    with pytest.raises(
        K8sccError, match=r"platforms\.k8s\.runImage: unknown key \(known: runAsGroup, runAsUser\)"
    ):
        config.parse("platforms: {k8s: {runImage: x}}")


def test_detect_claims_k8s_packages_unless_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source, metadata = package(tmp_path, {"name": "cc", "digest": DIGEST}, kind="K8s")
    config_file = tmp_path / "k8scc.yaml"
    monkeypatch.setenv("K8SCC_CFGFILE", str(config_file))
    config_file.write_text("namespace: fabric\n")
    assert main("detect", [str(source), str(metadata)], None) == 0
    config_file.write_text("platforms: {k8s: null}\n")
    assert main("detect", [str(source), str(metadata)], None) == 1
    assert f"platform k8s is disabled in {config_file}" in capsys.readouterr().err
