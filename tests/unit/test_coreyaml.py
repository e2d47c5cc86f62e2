"""`k8scc core-yaml`: the externalBuilders entry merged into Fabric's own core.yaml and into
edge-case documents, idempotently, in place atomically, and refusing bad input with one error
line while leaving the file as it was."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8scc import cli, coreyaml
from k8scc.errors import K8sccError
from testbed import binaries
from testbed.fabric import fabric_module_dir

pytestmark = pytest.mark.unit

DEFAULT_ENTRY = {
    "name": "k8scc",
    "path": "/opt/k8scc",
    "propagateEnvironment": [
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "K8SCC_CFGFILE",
        "CORE_PEER_ID",
        "K8SCC_PEER_POD_UID",
    ],
}


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def k8scc(capsys: pytest.CaptureFixture[str]) -> Callable[..., Done]:
    """`k8scc core-yaml ARGS` in this process; a string exit becomes the one stderr line and
    exit status 1 that the interpreter makes of it."""

    def run(*args: str | Path) -> Done:
        try:
            cli.main(["core-yaml", *map(str, args)])
        except SystemExit as stop:
            message = stop.code if isinstance(stop.code, str) else ""
            out, err = capsys.readouterr()
            code = 1 if message else int(stop.code or 0)
            return Done(code, out, err + (f"{message}\n" if message else ""))
        out, err = capsys.readouterr()
        return Done(0, out, err)

    return run


def command(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8scc", "core-yaml", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def builders(text: str) -> list[Any]:
    result: list[Any] = yaml.safe_load(text)["chaincode"]["externalBuilders"]
    return result


@pytest.fixture(params=sorted(binaries.FABRIC))
def sample_core(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A copy of the sampleconfig/core.yaml of each Fabric version the suite runs."""
    source = fabric_module_dir(binaries.FABRIC[request.param]) / "sampleconfig" / "core.yaml"
    copy = tmp_path / "core.yaml"
    copy.write_text(source.read_text())
    return copy


def test_without_a_file_prints_a_document_holding_only_the_entry() -> None:
    done = command()
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout) == {"chaincode": {"externalBuilders": [DEFAULT_ENTRY]}}


def test_options_set_name_path_and_extra_variables_once_each(k8scc: Callable[..., Done]) -> None:
    done = k8scc(
        "--builder-dir", "/srv/k8s builder", "--name", "kube",
        "--propagate", "HTTPS_PROXY", "--propagate", "CORE_PEER_ID", "--propagate", "HTTPS_PROXY",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert builders(done.stdout) == [
        {
            "name": "kube",
            "path": "/srv/k8s builder",
            "propagateEnvironment": [*DEFAULT_ENTRY["propagateEnvironment"], "HTTPS_PROXY"],
        }
    ]


def test_merges_into_fabrics_sample_core_yaml_keeping_everything_else(
    sample_core: Path, k8scc: Callable[..., Done]
) -> None:
    original = yaml.safe_load(sample_core.read_text())
    [ccaas] = original["chaincode"]["externalBuilders"]
    assert ccaas["name"] == "ccaas_builder"

    done = k8scc(sample_core)
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)
    # Fabric's own builder stays first: the peer tries builders in order and the ccaas
    # builder claims only packages of type ccaas.
    assert merged["chaincode"]["externalBuilders"] == [ccaas, DEFAULT_ENTRY]
    merged["chaincode"]["externalBuilders"] = [ccaas]
    assert merged == original
    assert list(merged) == list(original)
    assert yaml.safe_load(sample_core.read_text()) == original


def test_in_place_rewrites_the_file_idempotently(
    sample_core: Path, k8scc: Callable[..., Done]
) -> None:
    sample_core.chmod(0o640)
    first = k8scc("--in-place", sample_core)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    once = sample_core.read_text()
    assert builders(once)[-1] == DEFAULT_ENTRY
    assert sample_core.stat().st_mode & 0o777 == 0o640

    again = k8scc("--in-place", sample_core)
    assert again.returncode == 0, again.stderr
    assert sample_core.read_text() == once
    assert k8scc(sample_core).stdout == once
    assert [p.name for p in sample_core.parent.iterdir()] == ["core.yaml"]


def test_an_entry_of_the_same_name_is_replaced_where_it_stands(
    tmp_path: Path, k8scc: Callable[..., Done]
) -> None:
    core = tmp_path / "core.yaml"
    core.write_text(
        yaml.safe_dump(
            {
                "peer": {"id": "peer0"},
                "chaincode": {
                    "installTimeout": "300s",
                    "externalBuilders": [
                        {"name": "first", "path": "/a"},
                        {"name": "k8scc", "path": "/old", "propagateEnvironment": ["X"]},
                        {"name": "last", "path": "/b"},
                        {"name": "k8scc", "path": "/older"},
                    ],
                },
            }
        )
    )
    done = k8scc("--builder-dir", "/opt/new", core)
    assert done.returncode == 0, done.stderr
    document = yaml.safe_load(done.stdout)
    assert document["peer"] == {"id": "peer0"}
    assert document["chaincode"]["installTimeout"] == "300s"
    assert document["chaincode"]["externalBuilders"] == [
        {"name": "first", "path": "/a"},
        {**DEFAULT_ENTRY, "path": "/opt/new"},
        {"name": "last", "path": "/b"},
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {"chaincode": {"externalBuilders": [DEFAULT_ENTRY]}}),
        (
            "peer: {id: p}\n",
            {"peer": {"id": "p"}, "chaincode": {"externalBuilders": [DEFAULT_ENTRY]}},
        ),
        ("chaincode:\n", {"chaincode": {"externalBuilders": [DEFAULT_ENTRY]}}),
        (
            "chaincode: {externalBuilders: null, mode: net}\n",
            {"chaincode": {"externalBuilders": [DEFAULT_ENTRY], "mode": "net"}},
        ),
    ],
)
def test_missing_or_empty_sections_are_created(text: str, expected: dict[str, Any]) -> None:
    assert yaml.safe_load(coreyaml.render(text, coreyaml.builder_entry())) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("chaincode: [a\n", "core.yaml: not valid YAML at line 2"),
        ("- a\n- b\n", "expected a mapping at the top level, got a list"),
        ("a: 1\n---\nb: 2\n", "core.yaml: not valid YAML"),
        ("chaincode: builders\n", "chaincode: expected a mapping, got a string"),
        ("chaincode: {externalBuilders: {name: k8scc}}\n", "expected a list, got a mapping"),
        ("chaincode: {externalBuilders: true}\n", "expected a list, got a boolean"),
    ],
)
def test_bad_core_yaml_is_one_error_line_and_the_file_is_untouched(
    tmp_path: Path, text: str, error: str, k8scc: Callable[..., Done]
) -> None:
    core = tmp_path / "core.yaml"
    core.write_text(text)
    done = k8scc("--in-place", core)
    assert done.returncode != 0
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("k8scc core-yaml: error: ")
    assert error in line
    assert core.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["core.yaml"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["missing.yaml"], "missing.yaml: no such file"),
        (["--in-place", "missing.yaml"], "missing.yaml: no such file"),
        (["--in-place"], "--in-place needs a CORE_YAML file"),
        (["."], "cannot read ."),
        (["--builder-dir", "opt/k8scc"], "must be an absolute path"),
        (["--name", ""], "must not be empty"),
        (["--propagate", "A=B"], "'A=B' is not an environment variable name"),
    ],
)
def test_bad_arguments_are_one_error_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    error: str,
    k8scc: Callable[..., Done],
) -> None:
    monkeypatch.chdir(tmp_path)
    done = k8scc(*args)
    assert done.returncode != 0
    [line] = done.stderr.splitlines()
    assert line.startswith("k8scc core-yaml: error: ")
    assert error in line
    assert list(tmp_path.iterdir()) == []


def test_the_command_exits_non_zero_with_one_error_line(tmp_path: Path) -> None:
    core = tmp_path / "core.yaml"
    core.write_text("chaincode: 3\n")
    done = command("--in-place", core)
    assert done.returncode == 1
    assert (
        done.stderr
        == f"k8scc core-yaml: error: {core}: chaincode: expected a mapping, got a number\n"
    )
    assert core.read_text() == "chaincode: 3\n"


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    core = tmp_path / "core.yaml"
    core.write_bytes(b"peer:\n  id: \xff\n")
    with pytest.raises(K8sccError, match="not UTF-8 text"):
        coreyaml.core_yaml(core, coreyaml.builder_entry(), in_place=True)
    assert core.read_bytes() == b"peer:\n  id: \xff\n"


def test_a_failed_replace_leaves_the_file_and_no_temporary_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = tmp_path / "core.yaml"
    core.write_text("peer: {}\n")

    def refuse(source: str, target: Path) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(K8sccError, match=r"cannot write .*core\.yaml: Read-only file system"):
        coreyaml.core_yaml(core, coreyaml.builder_entry(), in_place=True)
    assert core.read_text() == "peer: {}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["core.yaml"]


def test_operators_comments_in_core_yaml_survive(sample_core: Path) -> None:
    """Fabric's core.yaml documents every setting in comments, and operators add their own."""
    text = sample_core.read_text().replace("peer:\n", "peer: # ours, since 2024\n", 1)
    comments = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
    merged = coreyaml.render(text, coreyaml.builder_entry())
    kept = {line.strip() for line in merged.splitlines()}
    assert [comment for comment in comments if comment not in kept] == []
    assert "peer: # ours, since 2024" in merged
    # The comment after the last builder introduces the next key, and still does.
    before = [line.strip() for line in merged.split("installTimeout:")[0].splitlines()]
    assert before[-3:] == [
        "# The maximum duration to wait for the chaincode build and install process",
        "# to complete.",
        "",
    ]
    assert builders(merged)[-1] == DEFAULT_ENTRY
