from __future__ import annotations

from pathlib import Path

import pytest
from lightkube import Client

from testbed.cluster import Testbed
from tests.support.builder import Builder, apply_rbac, make_builder


@pytest.fixture
def builder(
    testbed: Testbed, admin: Client, namespace: str, volume_dir: Path, tmp_path: Path
) -> Builder:
    """k8scc installed as a builder directory, acting as the ServiceAccount bound to exactly
    the Role of deploy/base/rbac.yaml."""
    apply_rbac(admin, namespace)
    return make_builder(testbed, namespace, volume_dir, tmp_path)
