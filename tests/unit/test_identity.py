"""Who the peer is: its owner pod comes from the downward API when the peer's pod hands its uid
down, and is looked up only when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8scc import config, identity
from k8scc.peer import POD_UID_ENV, Owner
from tests.unit.scripted_api import Reply, Step, pods_path, scripted_api

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

SETTINGS = config.parse("peer: {id: peer0, podName: peer-0}")


def test_a_uid_from_the_downward_api_names_the_owner_without_a_request(tmp_path: Path) -> None:
    with scripted_api([]) as api:
        who = identity.resolve(SETTINGS, api.kube(tmp_path), {POD_UID_ENV: "uid-from-env"})
        api.finished()
        assert api.requests == []
    assert who.owner == Owner(name="peer-0", uid="uid-from-env")


def test_without_it_the_owner_pod_is_read(tmp_path: Path) -> None:
    stored = {"metadata": {"name": "peer-0", "uid": "uid-stored"}}
    with scripted_api([Step("GET", pods_path("peer-0"), Reply(200, stored))]) as api:
        who = identity.resolve(SETTINGS, api.kube(tmp_path), {})
        api.finished()
    assert who.owner == Owner(name="peer-0", uid="uid-stored")


def test_a_peer_that_owns_nothing_ignores_the_uid(tmp_path: Path) -> None:
    settings = config.parse("peer: {id: peer0, podName: peer-0, ownerReferences: false}")
    with scripted_api([]) as api:
        who = identity.resolve(settings, api.kube(tmp_path), {POD_UID_ENV: "uid"})
        api.finished()
    assert who.owner is None
