"""Per-chaincode rules: which rules match a chaincode, what they change in its builder and
chaincode pods (later rules winning), and bad rules refused at load with one line naming each
problem."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8scc import config as configuration
from k8scc import doctor, render, rules
from k8scc.buildinfo import BuildInfo
from k8scc.errors import K8sccError
from k8scc.metadata import ChaincodeJson
from k8scc.peer import Identity
from k8scc.platforms import PLATFORMS
from tests.unit.helpers import restricted_violations

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

HASH = "ab" * 32
PEER = Identity(peer_id="peer0")

RULES = """
chaincode:
  resources: {requests: {cpu: 100m}, limits: {memory: 128Mi}}
pod:
  nodeSelector: {pool: fabric}
  labels: {team: ledger}
chaincodes:
  - match: {label: "asset*"}
    builder:
      resources: {limits: {memory: 3Gi}}
      env: {GOFLAGS: -mod=mod}
      timeout: 10m
    chaincode:
      resources: {limits: {memory: 512Mi, cpu: "2"}}
      env: {LOG_FORMAT: json, REGION: eu}
      envFrom:
        - secretRef: {name: asset-secrets}
        - {configMapRef: {name: asset-conf}, prefix: APP_}
      nodeSelector: {disk: ssd}
      tolerations: [{key: dedicated, operator: Equal, value: fabric, effect: NoSchedule}]
      labels: {tier: gold}
      annotations: {example.com/owner: ledger-team}
      hostAliases: [{ip: 10.0.0.7, hostnames: [oracle.internal]}]
      serviceAccountName: asset-sa
      terminationGracePeriodSeconds: 30
      timeout: 5m
  - match: {label: asset_2.0}
    chaincode:
      env: {REGION: us}
      image: registry.example.com/asset-runtime@sha256:{hash}
  - match: {packageId: "asset_1.0:{hash}"}
    chaincode:
      labels: {pinned: "yes"}
"""


def settings(text: str = RULES) -> configuration.Config:
    return configuration.parse(textwrap.dedent(text).replace("{hash}", HASH))


def chaincode(label: str) -> ChaincodeJson:
    return ChaincodeJson(f"{label}:{HASH}", "peer0:7052", "", "", "", "Org1MSP")


def chaincode_pod(config: configuration.Config, label: str) -> dict[str, Any]:
    chosen = rules.effective(config, rules.RUN, "golang", label, f"{label}:{HASH}")
    image = chosen.run_image or config.platforms["golang"].run_image
    return render.chaincode_pod(
        chosen.config, PLATFORMS["golang"], image, chaincode(label), "cc-x", PEER, "cc-x-1"
    )


def builder_pod(config: configuration.Config, label: str) -> dict[str, Any]:
    chosen = rules.effective(config, rules.BUILD, "golang", label)
    return render.builder_pod(
        chosen.config, PLATFORMS["golang"], "example.com/cc", label, "ccbuild-x", PEER, "ccbuild-x"
    )


def env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def test_rules_match_on_label_exactly_or_by_pattern_and_on_package_id_at_launch() -> None:
    config = settings()
    assert rules.effective(config, rules.RUN, "golang", "asset_1.0", f"asset_1.0:{HASH}").rules == [
        0,
        2,
    ]
    assert rules.effective(config, rules.RUN, "golang", "asset_2.0", f"asset_2.0:{HASH}").rules == [
        0,
        1,
    ]
    # A build knows no package id: the third rule cannot apply to it.
    assert rules.effective(config, rules.BUILD, "golang", "asset_1.0").rules == [0]
    # Case matters, as in Fabric's labels; nothing matches an unrelated chaincode.
    assert (
        rules.effective(config, rules.RUN, "golang", "Asset_1.0", f"Asset_1.0:{HASH}").rules == []
    )
    assert (
        rules.effective(config, rules.RUN, "golang", "basic_1.0", f"basic_1.0:{HASH}").rules == []
    )


def test_a_matching_rule_shapes_the_chaincode_pod() -> None:
    pod = chaincode_pod(settings(), "asset_1.0")
    [container] = pod["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "100m"},
        "limits": {"memory": "512Mi", "cpu": "2"},
    }
    variables = env(container)
    assert (variables["LOG_FORMAT"], variables["REGION"]) == ("json", "eu")
    assert variables["CORE_CHAINCODE_ID_NAME"] == f"asset_1.0:{HASH}"
    assert container["envFrom"] == [
        {"secretRef": {"name": "asset-secrets"}},
        {"configMapRef": {"name": "asset-conf"}, "prefix": "APP_"},
    ]
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "fabric", "disk": "ssd"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["hostAliases"] == [{"ip": "10.0.0.7", "hostnames": ["oracle.internal"]}]
    assert spec["serviceAccountName"] == "asset-sa"
    assert spec["terminationGracePeriodSeconds"] == 30
    labels = pod["metadata"]["labels"]
    assert (labels["team"], labels["tier"], labels["pinned"]) == ("ledger", "gold", "yes")
    assert labels["app.kubernetes.io/managed-by"] == "k8scc"
    assert pod["metadata"]["annotations"]["example.com/owner"] == "ledger-team"
    assert restricted_violations(pod) == []


def test_later_rules_win_and_an_image_rule_replaces_the_recorded_image() -> None:
    config = settings()
    pod = chaincode_pod(config, "asset_2.0")
    [container] = pod["spec"]["containers"]
    assert env(container)["REGION"] == "us"
    assert env(container)["LOG_FORMAT"] == "json"
    assert container["image"] == f"registry.example.com/asset-runtime@sha256:{HASH}"
    chosen = rules.effective(config, rules.RUN, "golang", "asset_2.0", f"asset_2.0:{HASH}")
    assert chosen.config.start_timeout == 300.0
    assert chosen.log_suffix() == ", with settings from chaincodes[0], chaincodes[1]"


def test_a_builder_rule_shapes_only_the_builder_pod() -> None:
    config = settings()
    pod = builder_pod(config, "asset_1.0")
    [container] = pod["spec"]["containers"]
    assert container["resources"]["limits"] == {"memory": "3Gi"}
    assert env(container)["GOFLAGS"] == "-mod=mod"
    assert pod["spec"]["activeDeadlineSeconds"] == 600
    assert "envFrom" not in container and "hostAliases" not in pod["spec"]
    assert pod["metadata"]["labels"]["team"] == "ledger"
    assert "tier" not in pod["metadata"]["labels"]
    assert restricted_violations(pod) == []
    # An unmatched chaincode gets the top-level settings only.
    other = chaincode_pod(config, "basic_1.0")
    [plain] = other["spec"]["containers"]
    assert plain["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}}
    assert "REGION" not in env(plain) and "envFrom" not in plain
    assert rules.effective(config, rules.RUN, "golang", "basic_1.0").config == config


def test_a_rule_can_run_a_platform_as_its_images_user_or_another_uid() -> None:
    config = settings(
        """
        chaincodes:
          - match: {label: "j*"}
            chaincode: {runAsUser: image}
          - match: {label: "k*"}
            chaincode: {runAsUser: 2000, runAsGroup: 3000}
        """
    )
    image_user = chaincode_pod(config, "j_1")["spec"]["securityContext"]
    assert "runAsUser" not in image_user and "runAsNonRoot" not in image_user
    uid = chaincode_pod(config, "k_1")["spec"]["securityContext"]
    assert (uid["runAsUser"], uid["runAsGroup"], uid["runAsNonRoot"]) == (2000, 3000, True)


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("chaincodes: {label: x}", ["chaincodes: expected a list, got a mapping"]),
        ("chaincodes: [{chaincode: {}}]", ["chaincodes[0].match: needs label or packageId"]),
        (
            "chaincodes: [{match: {name: x}}]",
            [
                "chaincodes[0].match.name: unknown key (known: label, packageId)",
                "chaincodes[0].match: needs label or packageId",
            ],
        ),
        (
            "chaincodes: [{match: {packageId: 'a:b'}, builder: {env: {A: b}}}]",
            ["chaincodes[0].builder: a build knows no package id; match builds on label only"],
        ),
        (
            "chaincodes: [{match: {label: a}, chaincode: {env: {CORE_PEER_TLS_ENABLED: 'false'}}}]",
            ["chaincodes[0].chaincode.env.CORE_PEER_TLS_ENABLED: set by k8scc"],
        ),
        (
            "chaincodes: [{match: {label: a}, chaincode: {labels: {k8scc.hyperledger.org/peer: x},"
            " annotations: {app.kubernetes.io/managed-by: me}}}]",
            [
                "chaincodes[0].chaincode.labels.k8scc.hyperledger.org/peer: k8scc's own key,"
                " which it sets itself",
                "chaincodes[0].chaincode.annotations.app.kubernetes.io/managed-by: k8scc's own"
                " key, which it sets itself",
            ],
        ),
        (
            "chaincodes: [{match: {label: a}, chaincode: {runAsUser: 0, resources: {limits:"
            " {memory: lots}}, terminationGracePeriodSeconds: 999}}]",
            [
                "chaincodes[0].chaincode.resources.limits.memory: invalid quantity 'lots'"
                " (use e.g. 500m, 1Gi)",
                "chaincodes[0].chaincode.runAsUser: must be a non-zero user or group id"
                " (pods run as non-root)",
                "chaincodes[0].chaincode.terminationGracePeriodSeconds: must be between 0 and 300",
            ],
        ),
        (
            "chaincodes: [{match: {label: a}, chaincode: {envFrom: [{secretRef: {}},"
            " {secretRef: {name: s}, configMapRef: {name: c}}], hostAliases: [{ip: nope,"
            " hostnames: []}], privileged: true}}]",
            [
                "chaincodes[0].chaincode.privileged: unknown key (known: affinity, annotations,"
                " env, envFrom, hostAliases, image, labels, nodeSelector, resources, runAsGroup,"
                " runAsUser, serviceAccountName, terminationGracePeriodSeconds, timeout,"
                " tolerations)",
                "chaincodes[0].chaincode.envFrom[0].secretRef.name: needed",
                "chaincodes[0].chaincode.envFrom[1]: needs exactly one of secretRef, configMapRef",
                "chaincodes[0].chaincode.hostAliases[0].ip: 'nope' is not an IP address",
                "chaincodes[0].chaincode.hostAliases[0].ip: needed",
                "chaincodes[0].chaincode.hostAliases[0].hostnames: expected a list of DNS names",
            ],
        ),
        (
            "timeouts: {leftovers: 20m}\n"
            "chaincodes: [{match: {label: a}, builder: {timeout: 30m}}]",
            ["chaincodes[0].builder.timeout: must be shorter than timeouts.leftovers (1200 s)"],
        ),
    ],
)
def test_bad_rules_are_refused_with_every_problem_on_one_line(
    text: str, problems: list[str]
) -> None:
    with pytest.raises(K8sccError) as refused:
        configuration.parse(text)
    message = str(refused.value)
    assert "\n" not in message
    assert message == "configuration: " + "; ".join(problems)


def test_render_shows_the_rules_a_chaincode_gets(tmp_path: Path) -> None:
    config = tmp_path / "k8scc.yaml"
    config.write_text(
        "peer: {id: peer0, ownerReferences: false}\n"
        + textwrap.dedent(RULES).replace("{hash}", HASH)
    )
    BuildInfo("golang", "b:1", "r:1", "asset_1.0", "0").write(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "chaincode.json").write_text(
        json.dumps(
            {"chaincode_id": f"asset_1.0:{HASH}", "peer_address": "p:7052", "mspid": "Org1MSP"}
        )
    )
    command: list[str | Path] = [sys.executable, "-m", "k8scc", "render", "run", "--config"]
    result = subprocess.run(
        [*command, config, tmp_path, tmp_path / "run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# chaincodes rules applied: chaincodes[0], chaincodes[2]\n")
    [pod] = yaml.safe_load_all(result.stdout)
    assert pod["metadata"]["labels"]["pinned"] == "yes"


def test_doctor_names_the_rules_a_label_gets_and_what_they_set() -> None:
    config = settings()
    shown = doctor.check_rules(config, "asset_1.0", f"asset_1.0:{HASH}")
    assert shown.passed
    assert shown.detail == (
        "label asset_1.0: builder pods: chaincodes[0] (resources, env, timeout);"
        " chaincode pods: chaincodes[0], chaincodes[2] (resources, env, envFrom, nodeSelector,"
        " tolerations, labels, annotations, hostAliases, serviceAccountName,"
        " terminationGracePeriodSeconds, timeout)"
    )
    assert doctor.check_rules(config, "basic_1.0", None).detail == (
        "label basic_1.0: builder pods: no rule; chaincode pods: no rule"
    )
