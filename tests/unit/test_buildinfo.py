"""k8scc-build.json: what `build` leaves for `run`, including the builder node's architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k8scc import buildinfo
from k8scc.buildinfo import BuildInfo
from k8scc.errors import K8sccError
from k8scc.record import as_dict

pytestmark = pytest.mark.unit


def test_the_architecture_is_recorded_and_read_back(tmp_path: Path) -> None:
    info = BuildInfo("golang", "b:1", "r:1", "cc", "0.3.0", architecture="arm64")
    info.write(tmp_path)
    assert json.loads((tmp_path / buildinfo.FILE).read_text())["architecture"] == "arm64"
    assert buildinfo.read(tmp_path) == info


def test_a_build_from_before_the_architecture_was_recorded_still_runs(tmp_path: Path) -> None:
    old = as_dict(BuildInfo("node", "b:1", "r:1", "cc", "0.2.0"))
    del old["architecture"]
    (tmp_path / buildinfo.FILE).write_text(json.dumps(old))
    assert buildinfo.read(tmp_path).architecture == ""


def test_a_missing_field_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / buildinfo.FILE).write_text(json.dumps({"platform": "node"}))
    with pytest.raises(K8sccError, match=r"k8scc-build.json is unreadable: 'build_image'"):
        buildinfo.read(tmp_path)
