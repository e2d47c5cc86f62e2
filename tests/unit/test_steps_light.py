"""detect runs for every install: it must stay light (no YAML parser, no Kubernetes client, not
even dataclasses or typing) and still refuse the platforms the configuration disables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from k8scc.cli import install_builder
from k8scc.errors import K8sccError
from k8scc.log import MAX_LINE, StepLog
from k8scc.steps import detect

pytestmark = pytest.mark.unit

HEAVY = (
    "yaml", "dataclasses", "inspect", "typing", "traceback", "ssl", "http.client", "lightkube",
    "httpx2",
)  # fmt: skip
# Runs the code of the bin/detect given as first argument, as that script, and prints every
# module loaded once it has exited.
PROBE = """
import atexit, sys
atexit.register(lambda: print(" ".join(sorted(sys.modules))))
sys.argv = sys.argv[1:]
with open(sys.argv[0]) as script:
    code = compile(script.read(), sys.argv[0], "exec")
exec(code, {"__name__": "__main__"})
"""


class Package:
    """A builder directory written by install-builder, and a package for detect to look at."""

    def __init__(self, tmp_path: Path, config: str) -> None:
        given = tmp_path / "given.yaml"
        given.write_text(config)
        self.builder = tmp_path / "builder"
        install_builder(self.builder, given, sys.executable)
        self.config = self.builder / "k8scc.yaml"
        self.source = tmp_path / "src-dir"
        self.source.mkdir()
        self.metadata = tmp_path / "metadata"
        self.metadata.mkdir()
        # As the peer runs builders: a pruned environment, so no K8SCC_CFGFILE.
        self.env = {"PATH": os.environ["PATH"]}

    def detect(self, platform: str, probe: bool = False) -> subprocess.CompletedProcess[str]:
        (self.metadata / "metadata.json").write_text(
            json.dumps({"type": platform, "label": "asset_1.0", "path": "k8scc.test/cc"})
        )
        program = str(self.builder / "bin" / "detect")
        prefix = [sys.executable, "-c", PROBE] if probe else []
        return subprocess.run(
            [*prefix, program, str(self.source), str(self.metadata)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY)]


def test_detect_without_a_platforms_section_loads_nothing_heavy(tmp_path: Path) -> None:
    package = Package(tmp_path, "namespace: fabric\npeer:\n  id: peer0.org1.example.com\n")
    probed = package.detect("golang", probe=True)
    assert (probed.returncode, probed.stderr) == (0, "")
    modules = probed.stdout.split()
    assert "k8scc.steps.detect" in modules
    assert heavy(modules) == []


def test_the_probe_sees_heavy_modules_when_they_load(tmp_path: Path) -> None:
    package = Package(tmp_path, "platforms:\n  node: null\n")
    probed = package.detect("golang", probe=True)
    assert (probed.returncode, probed.stderr) == (0, "")
    assert "yaml" in heavy(probed.stdout.split())


def test_detect_refuses_a_platform_the_configuration_disables(tmp_path: Path) -> None:
    package = Package(tmp_path, "namespace: fabric\nplatforms:\n  node: null\n")
    refused = package.detect("node")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"k8scc detect: error: platform node is disabled in {package.config}"
    ]
    assert refused.stdout == ""
    accepted = package.detect("golang")
    assert (accepted.returncode, accepted.stderr) == (0, "")


def test_detect_refuses_an_invalid_platforms_section_in_one_line(tmp_path: Path) -> None:
    package = Package(tmp_path, "platforms:\n  node:\n    runAsUser: 0\n")
    refused = package.detect("golang")
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith(f"k8scc detect: error: {package.config}: platforms.node.runAsUser: ")


def test_an_internal_error_shows_its_traceback_only_with_debug() -> None:
    # In a process of its own: main installs signal handlers.
    failing = """
import sys
from k8scc import steps
from k8scc.steps import detect
def execute(argv, log, bin_dir):
    log.debug = argv[0] == "debug"
    raise ValueError("boom")
detect.execute = execute
sys.exit(steps.main("detect", [sys.argv[1], "metadata"], None))
"""
    for mode in ("debug", "quiet"):
        failed = subprocess.run(
            [sys.executable, "-c", failing, mode], capture_output=True, text=True, check=False
        )
        assert failed.returncode == 1
        lines = failed.stderr.splitlines()
        assert lines[0] == "k8scc detect: error: internal error: ValueError: boom"
        if mode == "debug":
            assert lines[1] == "k8scc detect: Traceback (most recent call last):"
            assert lines[-1] == "k8scc detect: ValueError: boom"
        else:
            assert lines == lines[:1]


# --- deciding the enabled platforms -----------------------------------------------------------

ALL = {"golang", "node", "java", "k8s"}
WHERE = Path("/etc/k8scc/k8scc.yaml")


def test_text_without_platforms_enables_every_platform_unparsed() -> None:
    assert detect.enabled_platforms("namespace: fabric\n", WHERE) == ALL
    assert detect.enabled_platforms("", WHERE) == ALL
    # Not valid YAML, so not parsed: build, which validates the file, reports it.
    assert detect.enabled_platforms("namespace: [unclosed\n", WHERE) == ALL


def test_text_with_platforms_is_parsed() -> None:
    assert detect.enabled_platforms("platforms:\n  node: null\n", WHERE) == {
        "golang",
        "java",
        "k8s",
    }
    assert detect.enabled_platforms("platforms: {golang: null, java: ~}\n", WHERE) == {
        "node",
        "k8s",
    }
    assert detect.enabled_platforms("# platforms: all of them\nnamespace: a\n", WHERE) == ALL
    with pytest.raises(K8sccError, match=r"^/etc/k8scc/k8scc\.yaml: not valid YAML"):
        detect.enabled_platforms("# platforms\nnamespace: [unclosed\n", WHERE)


def test_text_with_a_backslash_is_parsed() -> None:
    # The key spelled through an escape: the text never says "platforms".
    escaped = '"platfor\\x6ds":\n  java: null\n'
    assert "platforms" not in escaped
    assert detect.enabled_platforms(escaped, WHERE) == {"golang", "node", "k8s"}
    with pytest.raises(K8sccError, match="namespace: 'A' is not a valid DNS label"):
        detect.enabled_platforms('namespace: "\\x41"\n', WHERE)


def test_a_disabled_platform_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("K8SCC_CFGFILE", raising=False)
    (tmp_path / "k8scc.yaml").write_text("platforms:\n  java: null\n  node: {runAsUser: 1000}\n")
    metadata = tmp_path / "metadata"
    metadata.mkdir()
    log = StepLog("detect")
    for kind, disabled in (("java", True), ("node", False), ("GOLANG", False)):
        (metadata / "metadata.json").write_text(json.dumps({"type": kind}))
        argv = [str(tmp_path / "src"), str(metadata)]
        if disabled:
            with pytest.raises(K8sccError) as raised:
                detect.execute(argv, log, tmp_path / "bin")
            assert str(raised.value) == f"platform java is disabled in {tmp_path / 'k8scc.yaml'}"
        else:
            assert detect.execute(argv, log, tmp_path / "bin") == 0


# --- the log ----------------------------------------------------------------------------------


def test_log_lines_stay_far_below_the_peers_64_kib_limit() -> None:
    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    sink = Sink()
    log = StepLog("run", chaincode="cc:1", pod="cc-1", stream=sink)  # type: ignore[arg-type]
    log.output("x" * 200_000)
    log.error("first\nsecond\n\nthird")
    lines = sink.text.splitlines()
    assert len(lines) == 2
    assert len(lines[0]) <= MAX_LINE and lines[0].endswith("[line cut]")
    assert lines[1] == "k8scc run [chaincode=cc:1 pod=cc-1]: error: first second third"


def test_log_writes_to_the_stderr_of_when_it_was_made(capsys: pytest.CaptureFixture[str]) -> None:
    log = StepLog("detect")
    log.chaincode = "cc_1"
    log.info("two\nlines")
    assert (
        capsys.readouterr().err
        == "k8scc detect [chaincode=cc_1]: two\nk8scc detect [chaincode=cc_1]: lines\n"
    )
