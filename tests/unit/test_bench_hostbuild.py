"""The host-side build the benchmark compares k8scc with: Fabric's build script with its
absolute /chaincode paths moved below a root, and the builder pod's environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.hostbuild import build_env, prepare, relocate
from k8scc import config as configuration
from k8scc.platforms import PLATFORMS
from testbed import tools

pytestmark = pytest.mark.unit


def load_config(tmp_path: Path, text: str = "") -> configuration.Config:
    path = tmp_path / "k8scc.yaml"
    path.write_text(
        "namespace: ns\ntransfer: {claimName: transfer, mountPath: /tmp}\n"
        "peer: {id: peer0}\n" + text
    )
    return configuration.load(path)


def test_paths_starting_with_chaincode_move_and_others_stay() -> None:
    script = PLATFORMS["golang"].build_script("k8scc.test/samples/chaincode/go", False)
    moved = relocate(script, Path("/r"))
    assert "cd /r/chaincode/input/src\n" in moved
    assert "-o /r/chaincode/output/chaincode k8scc.test/samples/chaincode/go" in moved
    assert "GOPATH=/r/chaincode/input:$GOPATH" in moved
    assert "/r/chaincode/input/src/k8scc.test/samples/chaincode/go/go.mod" in moved
    # every absolute /chaincode path moved, none inside the package path
    assert moved.replace("/r/chaincode/", "").count("/chaincode/") == moved.count(
        "samples/chaincode/"
    )


def test_environment_is_the_builder_pods(tmp_path: Path) -> None:
    config = load_config(
        tmp_path, "buildEnv: {A: top}\nplatforms: {golang: {buildEnv: {A: platform, B: b}}}\n"
    )
    env = build_env(config, PLATFORMS["golang"], tmp_path / "home")
    assert env == {
        "HOME": str(tmp_path / "home"),
        "GOPROXY": "https://proxy.golang.org",
        "GOTOOLCHAIN": "auto",
        "A": "platform",
        "B": "b",
    }


def test_prepared_build_runs_the_platform_script_below_its_root(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "src").mkdir(parents=True)
    (source / "src" / "package.json").write_text("{}")
    overlay = tmp_path / "overlay"
    (overlay / "chaincode").mkdir(parents=True)
    stand_in = overlay / "chaincode" / "build.sh"
    # A stand-in for the image's build.sh: proves where it runs, from what input, with what HOME.
    stand_in.write_text(
        "#!/bin/sh\n"
        'out="$K8SCC_FSROOT/chaincode/output"\n'
        'cp "$K8SCC_FSROOT/chaincode/input/src/package.json" "$out/"\n'
        'ls -A "$HOME" > "$out/home"\n'
    )
    stand_in.chmod(0o755)
    config = load_config(tmp_path)
    build = prepare(
        config, PLATFORMS["node"], "", source, tmp_path / "root", overlay, tools.host_path()
    )
    assert build.output == tmp_path / "root" / "chaincode" / "output"
    assert build.env["HOME"] == str(tmp_path / "root" / "home")
    subprocess.run(build.argv, env=build.env, cwd=build.cwd, check=True)
    assert (build.output / "package.json").read_text() == "{}"
    assert (build.output / "home").read_text() == ""  # HOME started empty


def test_java_builds_in_its_image_workdir(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    config = load_config(tmp_path)
    build = prepare(config, PLATFORMS["java"], "", source, tmp_path / "root", None, "/bin")
    assert build.cwd == tmp_path / "root" / "root" / "chaincode-java"
    assert build.argv == ["/bin/sh", "-c", PLATFORMS["java"].build_script("", False)]
