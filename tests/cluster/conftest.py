from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from lightkube import Client

from testbed.cluster import Testbed
from tests.support.builder import (
    Builder,
    apply_rbac,
    make_builder,
    package_source,
    transfer_volume,
)

_modules = itertools.count(1)


@pytest.fixture
def builder(
    testbed: Testbed, admin: Client, namespace: str, volume_dir: Path, tmp_path: Path
) -> Builder:
    """k8scc installed as a builder directory, acting as the ServiceAccount bound to exactly
    the Role of deploy/chaincode/rbac.yaml."""
    apply_rbac(testbed.control_plane, namespace)
    return make_builder(testbed, namespace, volume_dir, tmp_path)


@pytest.fixture(scope="session")
def golang_output(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BUILD_OUTPUT_DIR of the Go sample, built once per session in a namespace of its own."""
    workdir = tmp_path_factory.mktemp("golang-build")
    namespace = f"build-{next(_modules)}-golang"
    testbed.control_plane.create_namespace(namespace)
    volume = transfer_volume(testbed.control_plane, namespace, workdir / "volume")
    client = testbed.control_plane.client()
    apply_rbac(testbed.control_plane, namespace)
    client.close()
    builder = make_builder(testbed, namespace, volume, workdir)
    source, metadata = package_source("golang", workdir)
    output = workdir / "bld"
    output.mkdir()
    built = builder.run("build", source, metadata, output)
    assert built.returncode == 0, built.stderr
    return output
