"""Fixtures shared by the suite: one test bed per session, a fresh namespace per test."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client

from testbed.cluster import Testbed
from tests.support.builder import transfer_volume

_counter = itertools.count(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The host holds one real node at a time and the session's stays up until the end, so
    tests that start their own go first (the sort is stable: the rest keep their order)."""
    items.sort(key=lambda item: item.get_closest_marker("own_node") is None)


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    bed = Testbed(tmp_path_factory.mktemp("testbed"))
    bed.start()
    try:
        yield bed
    finally:
        bed.stop()


@pytest.fixture
def namespace(testbed: Testbed, request: pytest.FixtureRequest) -> str:
    """A fresh namespace enforcing PodSecurity `restricted` (or the test's `podsecurity`
    level), named after the test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    name = f"t{next(_counter)}-{slug}"[:63].rstrip("-")
    level = request.node.get_closest_marker("podsecurity")
    testbed.control_plane.create_namespace(name, enforce=level.args[0] if level else "restricted")
    return name


@pytest.fixture
def admin(testbed: Testbed) -> Iterator[Client]:
    client = testbed.control_plane.client()
    yield client
    client.close()


@pytest.fixture
def volume_dir(testbed: Testbed, namespace: str, tmp_path: Path) -> Path:
    """A directory behind the PVC `transfer` of the test's namespace."""
    return transfer_volume(testbed.control_plane, namespace, tmp_path / "volume")
