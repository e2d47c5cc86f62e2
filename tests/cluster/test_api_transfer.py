"""The transfer mode with no volume (transfer.mode: api) on the real node: files go into
builder and chaincode pods and the build output comes back through exec streams, with no
PersistentVolumeClaim in the namespace, and nothing is left behind."""

from __future__ import annotations

import json
import platform as host_platform
import time
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import PersistentVolumeClaim, Pod

from k8scc.buildinfo import ARCHITECTURES
from k8scc.render import ARCH_FILE
from testbed.cluster import BUILD_CACHE_CLAIM, Testbed
from tests.cluster.test_steps import BUILT_FILE, launch_and_stop, wait_clean
from tests.support.builder import (
    Builder,
    apply_rbac,
    make_builder,
    package_source,
    rbac_rules,
)

pytestmark = [pytest.mark.cluster]

EXEC_RULE = {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]}


def api_builder(
    testbed: Testbed, admin: Client, namespace: str, workdir: Path, **extra: Any
) -> Builder:
    """k8scc in api mode with no claim at all in its namespace (not even the test bed's
    build cache), so that any pod mounting one could not start."""
    apply_rbac(testbed.control_plane, namespace, rules=[*rbac_rules(), EXEC_RULE])
    empty = workdir / "no-volume"
    empty.mkdir()
    settings = {"transfer": {"mode": "api"}, "buildCache": None, **extra}
    builder = make_builder(testbed, namespace, empty, workdir, extra=settings)
    admin.delete(PersistentVolumeClaim, BUILD_CACHE_CLAIM, namespace=namespace)
    return builder


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "platform", ["golang", "node", pytest.param("java", marks=pytest.mark.podsecurity("baseline"))]
)
def test_build_and_run_through_the_api_with_no_volume(
    testbed: Testbed, admin: Client, namespace: str, tmp_path: Path, platform: str
) -> None:
    builder = api_builder(testbed, admin, namespace, tmp_path)
    source, metadata = package_source(platform, tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    started = time.monotonic()
    built = builder.run("build", source, metadata, output)
    print(f"{platform} build through the API: {time.monotonic() - started:.1f} s")
    assert built.returncode == 0, built.stderr
    assert (output / "output" / BUILT_FILE[platform]).is_file()
    info = json.loads((output / "k8scc-build.json").read_text())
    assert info["architecture"] == ARCHITECTURES[host_platform.machine()]
    assert not (output / "output" / ARCH_FILE).exists()
    assert list(admin.list(PersistentVolumeClaim, namespace=namespace)) == []
    assert wait_clean(admin, namespace, None) == []
    launch_and_stop(builder, output, tmp_path, platform, True, testbed.host_address)
    assert wait_clean(admin, namespace, None) == []
    assert list(builder.transfer.iterdir()) == []
