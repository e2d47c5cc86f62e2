"""k8scc's version lives in one place (src/k8scc/__init__.py); the package metadata and the
peer image's release tag, in the image builder and in deploy/, follow it (docs/releasing.md)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import yaml

import k8scc
from testbed import binaries, peer_image

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_package_version_is_the_one_in_the_source() -> None:
    assert importlib.metadata.version("k8scc") == k8scc.__version__


def test_the_peer_image_tag_is_fabric_version_then_k8scc_version() -> None:
    fabric = binaries.FABRIC["3.1"].version
    assert peer_image.tag("3.1") == f"k8scc-peer:{fabric}-k8scc{k8scc.__version__}"


def test_deploy_names_this_release_of_the_peer_image() -> None:
    documents = yaml.safe_load_all((DEPLOY / "base" / "peer.yaml").read_text())
    [statefulset] = [d for d in documents if d["kind"] == "StatefulSet"]
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == peer_image.tag("3.1")
    overlay = yaml.safe_load(
        (DEPLOY / "overlays" / "example" / "peer" / "kustomization.yaml").read_text()
    )
    [image] = overlay["images"]
    assert f"{image['name']}:{image['newTag']}" == peer_image.tag("3.1")
