"""Per-chaincode settings: the `chaincodes` rules of k8scc.yaml, and the configuration one
chaincode's builder or chaincode pod gets once every rule matching it is applied in order.

A rule matches on the package label as Fabric gives it (`basic_1.0`) and, at launch, on the
package id (`basic_1.0:<hash>`), exactly or as a shell-style pattern (`*`, `?`, `[...]`); no
Kubernetes name is derived from either. Later rules win: maps (env, labels, annotations,
nodeSelector, resource requests and limits) merge key by key, every other value is replaced.
"""

from __future__ import annotations

from typing import Any

from k8scc import record as records
from k8scc.config import IMAGE_USER, Config, PodOverrides, Resources, Rule
from k8scc.platforms import PLATFORMS
from k8scc.record import record

BUILD, RUN = "build", "run"


@record
class Effective:
    """One pod's configuration; `run_image` replaces the image the build recorded, if set."""

    config: Config
    rules: list[int]  # the indexes of the rules applied
    run_image: str | None = None

    @property
    def applied(self) -> str:
        """The rules applied, as k8scc.yaml's readers find them; empty for none."""
        return ", ".join(f"chaincodes[{index}]" for index in self.rules)

    def log_suffix(self) -> str:
        return f", with settings from {self.applied}" if self.rules else ""


def effective(
    config: Config, step: str, platform: str, label: str, package_id: str | None = None
) -> Effective:
    """`config` with the rules that match this chaincode applied, for its `step` pod; a build
    knows no package id, so rules naming one apply only at launch."""
    matched: list[int] = []
    run_image: str | None = None
    for rule, overrides in matching(config, step, label, package_id):
        matched.append(rule.index)
        if overrides is not None:
            config = _apply(config, step, platform, overrides)
            run_image = overrides.image if step == RUN and overrides.image else run_image
    return Effective(config, matched, run_image)


def matching(
    config: Config, step: str, label: str, package_id: str | None = None
) -> list[tuple[Rule, PodOverrides | None]]:
    """The rules that apply to this chaincode's `step` pod, in order, with their part for it."""
    known = package_id if step == RUN else None
    return [
        (rule, rule.builder if step == BUILD else rule.chaincode)
        for rule in config.rules
        if rule.matches(label, known)
    ]


def fields_set(overrides: PodOverrides | None) -> list[str]:
    """The fields a rule sets for one kind of pod, named as in k8scc.yaml."""
    if overrides is None:
        return []
    unset = PodOverrides()
    return [
        _YAML_NAMES.get(name, name)
        for name in records.fields(overrides)
        if getattr(overrides, name) != getattr(unset, name)
    ]


_YAML_NAMES = {
    "env_from": "envFrom",
    "node_selector": "nodeSelector",
    "host_aliases": "hostAliases",
    "service_account_name": "serviceAccountName",
    "run_as_user": "runAsUser",
    "run_as_group": "runAsGroup",
    "termination_grace": "terminationGracePeriodSeconds",
}


def _merged(resources: Resources, more: Resources) -> Resources:
    return Resources({**resources.requests, **more.requests}, {**resources.limits, **more.limits})


def _apply(config: Config, step: str, platform: str, o: PodOverrides) -> Config:
    settings = config.platforms[platform]
    if o.run_as_user is not None:
        uid = None if o.run_as_user == IMAGE_USER else int(o.run_as_user)
        settings = records.replace(
            settings,
            run_as_user=uid,
            run_as_group=None if uid is None else o.run_as_group or uid,
            non_root=uid is not None or PLATFORMS[platform].image_user_non_root,
        )
    elif o.run_as_group is not None:
        settings = records.replace(settings, run_as_group=o.run_as_group)
    changes: dict[str, Any] = {
        "node_selector": {**config.node_selector, **o.node_selector},
        "labels": {**config.labels, **o.labels},
        "annotations": {**config.annotations, **o.annotations},
    }
    if step == BUILD:
        changes["builder_resources"] = _merged(config.builder_resources, o.resources)
        # The platform's own buildEnv wins over the top-level one; a rule wins over both.
        settings = records.replace(
            settings,
            build_env={**settings.build_env, **o.env},
            build_image=o.image or settings.build_image,
        )
        if o.timeout is not None:
            changes["build_timeout"] = o.timeout
    else:
        changes["chaincode_resources"] = _merged(config.chaincode_resources, o.resources)
        changes["chaincode_env"] = {**config.chaincode_env, **o.env}
        if o.timeout is not None:
            changes["start_timeout"] = o.timeout
    for name in ("env_from", "tolerations", "affinity", "host_aliases", "service_account_name"):
        value = getattr(o, name)
        if value is not None:
            changes[name] = value
    if o.termination_grace is not None:
        changes["termination_grace"] = o.termination_grace
    changes["platforms"] = {**config.platforms, platform: settings}
    return records.replace(config, **changes)
