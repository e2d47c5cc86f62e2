"""Finding the configuration file and reading its text, each failure one error line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from k8scc import configfile
from k8scc.errors import K8sccError

pytestmark = pytest.mark.unit


def test_locate_prefers_the_environment(tmp_path: Path) -> None:
    env = {configfile.CONFIG_ENV: "/etc/k8scc/custom.yaml"}
    assert configfile.locate(tmp_path / "bin", env) == Path("/etc/k8scc/custom.yaml")
    assert configfile.locate(None, env) == Path("/etc/k8scc/custom.yaml")


def test_locate_without_environment_uses_the_builder_directory(tmp_path: Path) -> None:
    assert configfile.locate(tmp_path / "bin", {}) == tmp_path / "k8scc.yaml"
    env = {configfile.CONFIG_ENV: ""}
    assert configfile.locate(tmp_path / "bin", env) == tmp_path / "k8scc.yaml"


def test_locate_with_nothing_to_go_on() -> None:
    with pytest.raises(K8sccError, match=configfile.CONFIG_ENV):
        configfile.locate(None, {})


def test_read_returns_the_text(tmp_path: Path) -> None:
    path = tmp_path / "k8scc.yaml"
    path.write_bytes("namespace: fabric # é\n".encode())
    assert configfile.read(path) == "namespace: fabric # é\n"


def test_read_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "k8scc.yaml"
    with pytest.raises(K8sccError) as raised:
        configfile.read(path)
    assert str(raised.value) == (
        f"configuration file {path} not found (set K8SCC_CFGFILE or put k8scc.yaml beside bin/)"
    )


def test_read_of_a_directory(tmp_path: Path) -> None:
    with pytest.raises(
        K8sccError, match=rf"^cannot read configuration file {re.escape(str(tmp_path))}: \w"
    ):
        configfile.read(tmp_path)


def test_read_of_text_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "k8scc.yaml"
    path.write_bytes(b"namespace: fabric\npeer: {id: p\xe9er}\n")
    with pytest.raises(K8sccError) as raised:
        configfile.read(path)
    assert str(raised.value) == f"configuration file {path} is not UTF-8 text (byte 30)"
