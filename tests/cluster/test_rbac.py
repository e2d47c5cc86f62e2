"""The Role in deploy/chaincode/rbac.yaml is the least k8scc needs: without any one of its
permissions a step fails with one line naming exactly that permission."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from testbed.cluster import Testbed
from tests.support.builder import (
    apply_rbac,
    make_builder,
    rbac_rules,
    small_node_package,
)
from tests.support.fakepeer import FakePeer
from tests.support.pods import phase_in, shell_pod, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

PERMISSIONS = [
    (resource, verb)
    for rule in rbac_rules()
    for resource in rule["resources"]
    for verb in rule["verbs"]
]


def without(resource: str, verb: str) -> list[dict[str, Any]]:
    rules = []
    for rule in rbac_rules():
        verbs = [v for v in rule["verbs"] if not (resource in rule["resources"] and v == verb)]
        if verbs:
            rules.append({**rule, "verbs": verbs})
    return rules


def test_every_permission_of_the_role_is_covered() -> None:
    assert sorted(PERMISSIONS) == sorted(
        [
            ("pods", "create"),
            ("pods", "get"),
            ("pods", "list"),
            ("pods", "watch"),
            ("pods", "delete"),
            ("pods/log", "get"),
            ("pods/exec", "create"),
            ("pods/exec", "get"),
            ("secrets", "create"),
            ("secrets", "delete"),
        ]
    )


# Without these a build still succeeds, and says once what it could not do.
OPTIONAL = {
    ("pods/log", "get"): "log stream of pod",
    ("pods", "list"): "leftovers of killed steps not collected",
}


@pytest.mark.parametrize(
    ("resource", "verb"), [p for p in PERMISSIONS if p not in OPTIONAL], ids=str
)
def test_a_step_fails_naming_the_missing_permission(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    golang_output: Path,
    resource: str,
    verb: str,
) -> None:
    apply_rbac(testbed.control_plane, namespace, rules=without(resource, verb))
    # The peer runs in a pod here, so k8scc reads it (`get pods`) to name it as owner.
    admin.create(shell_pod("peer0", "while :; do sleep 1; done"), namespace=namespace)
    wait_for(admin, "peer0", namespace, phase_in("Running"))
    settings: dict[str, Any] = {"peer": {"id": "peer0", "podName": "peer0"}}
    if resource == "pods/exec":  # streams are how files move in transfer mode api
        settings["transfer"] = {"mode": "api"}
    builder = make_builder(testbed, namespace, volume_dir, tmp_path, settings)
    if resource == "secrets":
        with FakePeer(tls=True, host=testbed.host_address) as peer:
            chaincode_id = f"asset_1.0:{'ef' * 32}"
            meta = tmp_path / "run"
            meta.mkdir()
            (meta / "chaincode.json").write_text(json.dumps(peer.chaincode_json(chaincode_id)))
            step = builder.start("run", golang_output, meta)
            if verb == "delete":  # only needed when the launch ends
                assert peer.wait_registered(chaincode_id, 60), step.stderr
                code = step.stop()
            else:
                code = step.process.wait(60)
                step.stop()
            stderr = step.stderr
    else:
        source, metadata = small_node_package(tmp_path)
        output = tmp_path / "bld"
        output.mkdir()
        result = builder.run("build", source, metadata, output)
        code, stderr = result.returncode, result.stderr
        assert list(output.iterdir()) == []
    admin.delete(Pod, "peer0", namespace=namespace, grace_period=0)
    assert code != 0
    errors = [line for line in stderr.splitlines() if re.search(r"\]: error: ", line)]
    assert len(errors) == 1, stderr
    if resource == "pods/exec":  # a refused upgrade may not say which verb it checked
        assert 'verbs create and get on resource "pods/exec"' in errors[0], errors[0]
    else:
        assert f'cannot {verb} resource "{resource}"' in errors[0], errors[0]


@pytest.mark.parametrize(("resource", "verb"), sorted(OPTIONAL), ids=str)
def test_without_an_optional_permission_a_build_succeeds_and_says_what_it_missed(
    testbed: Testbed,
    admin: Client,
    namespace: str,
    volume_dir: Path,
    tmp_path: Path,
    resource: str,
    verb: str,
) -> None:
    """A log stream that fails, or leftovers that cannot be looked for, never fail the step:
    the build's result comes back anyway, and the peer's log says once what is missing."""
    apply_rbac(testbed.control_plane, namespace, rules=without(resource, verb))
    builder = make_builder(testbed, namespace, volume_dir, tmp_path, {"peer": {"id": "peer0"}})
    source, metadata = small_node_package(tmp_path)
    output = tmp_path / "bld"
    output.mkdir()
    result = builder.run("build", source, metadata, output)
    assert result.returncode == 0, result.stderr
    assert (output / "k8scc-build.json").is_file()
    warnings = [line for line in result.stderr.splitlines() if OPTIONAL[resource, verb] in line]
    assert len(warnings) == 1, result.stderr
    assert f'cannot {verb} resource "{resource}"' in warnings[0]
