"""`run` starts on every launch's path: it reads the configuration from the record `build` left
beside the output while the file still holds the text recorded, and loads neither the YAML
parser nor http.client (with the email package) nor subprocess (for exec credential plugins)
nor dataclasses (with inspect) nor, in volume mode, tarfile; what follows a running pod loads
once the pod is created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from k8scc import config, configrecord

pytestmark = pytest.mark.unit

TEXT = "namespace: fabric\npeer:\n  id: peer0.org1\n"
# Loads run's step module and its configuration as `run` does, then prints every module loaded.
PROBE = """
import sys
from pathlib import Path
from k8scc.steps import run
from k8scc import config
config.load(Path(sys.argv[1]), recorded_in=Path(sys.argv[2]))
print(" ".join(sorted(sys.modules)))
"""


def write(tmp_path: Path, text: str = TEXT) -> tuple[Path, Path]:
    path = tmp_path / "k8scc.yaml"
    path.write_text(text)
    output = tmp_path / "output"
    output.mkdir(exist_ok=True)
    return path, output


def loaded(path: Path, output: Path) -> set[str]:
    probed = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(output)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(probed.stdout.split())


HEAVY = {"yaml", "http.client", "email", "tarfile", "subprocess", "dataclasses", "inspect"}
# Loaded once the pod is created: following it, streaming into it, collecting leftovers.
AFTER_CREATE = {"k8scc.supervise", "k8scc.podlog", "k8scc.websocket", "k8scc.collect"}


def test_run_with_a_record_loads_nothing_heavy(tmp_path: Path) -> None:
    path, output = write(tmp_path)
    assert "yaml" in loaded(path, output)  # the probe sees it when it loads
    config.record(path, output)
    assert (output / configrecord.FILE).is_file()
    assert (HEAVY | AFTER_CREATE) & loaded(path, output) == set()


def test_only_the_peer_can_read_the_record(tmp_path: Path) -> None:
    path, output = write(tmp_path, TEXT + "buildEnv: {GOPROXY: 'https://u:secret@proxy'}\n")
    config.record(path, output)
    assert (output / configrecord.FILE).stat().st_mode & 0o777 == 0o600


def test_a_record_counts_only_for_the_text_it_was_read_from(tmp_path: Path) -> None:
    path, output = write(tmp_path)
    config.record(path, output)
    assert config.load(path, recorded_in=output).namespace == "fabric"
    path.write_text(TEXT.replace("fabric", "chaincode"))
    assert config.load(path, recorded_in=output).namespace == "chaincode"


def test_a_recorded_document_is_validated_like_the_yaml(tmp_path: Path) -> None:
    path, output = write(tmp_path, "namespace: Not_A_Label\n")
    configrecord.record(output, path.read_text(), {"namespace": "Not_A_Label"})
    with pytest.raises(Exception, match="namespace: 'Not_A_Label' is not a valid DNS label"):
        config.load(path, recorded_in=output)


def test_a_document_json_cannot_hold_exactly_is_not_recorded(tmp_path: Path) -> None:
    for text in ("pod: {labels: {1: a}}\n", "namespace: fabric\nwhen: 2026-12-07\n"):
        path, output = write(tmp_path, text)
        config.record(path, output)
        assert not (output / configrecord.FILE).exists()


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"text": 1}'])
def test_an_unreadable_record_is_ignored(tmp_path: Path, content: str) -> None:
    path, output = write(tmp_path)
    (output / configrecord.FILE).write_text(content)
    assert config.load(path, recorded_in=output).namespace == "fabric"


def test_build_and_run_find_the_same_configuration(tmp_path: Path) -> None:
    path, output = write(tmp_path, TEXT + "pod: {labels: {team: blue}}\ntimeouts: {start: 90s}\n")
    config.record(path, output)
    assert config.load(path, recorded_in=output) == config.load(path)
