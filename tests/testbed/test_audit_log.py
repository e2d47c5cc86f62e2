"""The opt-in audit log the benchmark counts k8scc's API requests from: a ServiceAccount's
requests show up once each, by verb and resource, with a watch counted while still open."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.resources.core_v1 import Pod, Secret

from bench.audit import breakdown, read_events, requests_by, serviceaccount_user
from testbed.controlplane import ControlPlane
from tests.support.builder import apply_rbac
from tests.support.pods import shell_pod

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_serviceaccount_requests_are_in_the_audit_log(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path / "cp", with_controller_manager=False, audit=True)
    with plane:
        plane.create_namespace("audited")
        apply_rbac(plane, "audited")
        config = plane.serviceaccount_kubeconfig("audited", "k8scc", tmp_path / "sa.kubeconfig")
        admin = plane.client()
        admin.create(shell_pod("present", "true"), namespace="audited")
        admin.close()
        client = Client(KubeConfig.from_file(config))
        since = time.time()
        client.get(Pod, "present", namespace="audited")
        with pytest.raises(ApiError, match="forbidden"):  # the Role may not list Secrets
            list(client.list(Secret, namespace="audited"))
        opened = threading.Event()

        def watch() -> None:
            with contextlib.suppress(Exception):  # the stream breaks when the server stops
                for _ in client.watch(Pod, namespace="audited"):
                    opened.set()

        threading.Thread(target=watch, daemon=True).start()
        assert opened.wait(30)  # the initial ADDED event: the watch is open
        until = time.time() + 1
        found = requests_by(
            read_events(plane.audit_log), serviceaccount_user("audited", "k8scc"), since, until
        )
        client.close()
    assert breakdown(found) == {"get pods": 1, "list secrets": 1, "watch pods": 1}


def test_the_audit_log_is_off_unless_asked_for(tmp_path: Path) -> None:
    with ControlPlane(tmp_path / "cp", with_controller_manager=False) as plane:
        plane.create_namespace("quiet")
    assert not plane.audit_log.exists()
