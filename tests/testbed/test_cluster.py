"""The test bed proves itself against the real API server: pods really run."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import httpx2
import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Node, Pod, Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from testbed.cluster import BUSYBOX_IMAGE, Testbed
from testbed.objects import load
from tests.support.pods import RESTRICTED_CONTAINER, phase_in, shell_pod, terminated, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_pod_writes_to_a_subpath_and_its_log_is_served(
    admin: Client, namespace: str, volume_dir: Path
) -> None:
    pod = shell_pod(
        "writer",
        "echo hello > /out/greeting && id -u && echo done",
        volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "transfer"}}],
        container={"volumeMounts": [{"name": "v", "mountPath": "/out", "subPath": "a/b"}]},
    )
    admin.create(pod, namespace=namespace)
    final = wait_for(admin, "writer", namespace, phase_in("Succeeded", "Failed"))
    assert final["status"]["phase"] == "Succeeded"
    state = terminated(final)
    assert (state["exitCode"], state["reason"]) == (0, "Completed")
    assert state["startedAt"] <= state["finishedAt"]
    assert (volume_dir / "a" / "b" / "greeting").read_text() == "hello\n"
    assert list(admin.log("writer", namespace=namespace, newlines=False)) == ["65532", "done"]


def test_log_follow_streams_live_and_ends_at_exit(admin: Client, namespace: str) -> None:
    admin.create(
        shell_pod("ticker", "echo first; sleep 2; echo second; sleep 1; exit 3"),
        namespace=namespace,
    )
    wait_for(admin, "ticker", namespace, phase_in("Running", "Succeeded", "Failed"))
    arrivals: list[tuple[str, bool]] = []
    for line in admin.log("ticker", namespace=namespace, follow=True, newlines=False):
        done = admin.get(Pod, "ticker", namespace=namespace).status.phase == "Failed"  # type: ignore[union-attr]
        arrivals.append((line, done))
    assert [line for line, _ in arrivals] == ["first", "second"]
    # The first line arrived while the container was still running: streamed, not replayed.
    assert arrivals[0][1] is False
    final = wait_for(admin, "ticker", namespace, phase_in("Failed"))
    state = terminated(final)
    assert (state["exitCode"], state["reason"]) == (3, "Error")


def test_deleting_a_running_pod_stops_it_within_the_grace_period(
    admin: Client, namespace: str, volume_dir: Path
) -> None:
    # PID 1 ignores SIGTERM unless it traps it; this one records the signal and exits.
    script = (
        "trap 'echo term > /out/signal; exit 0' TERM; echo $$ > /out/pid;"
        " while :; do sleep 0.1; done"
    )
    pod = shell_pod(
        "sleeper",
        script,
        terminationGracePeriodSeconds=10,
        volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "transfer"}}],
        container={"volumeMounts": [{"name": "v", "mountPath": "/out"}]},
    )
    admin.create(pod, namespace=namespace)
    wait_for(admin, "sleeper", namespace, phase_in("Running"))
    while not (volume_dir / "pid").exists():
        time.sleep(0.1)
    started = time.monotonic()
    admin.delete(Pod, "sleeper", namespace=namespace)
    with pytest.raises(ApiError) as gone:
        while time.monotonic() - started < 15:
            admin.get(Pod, "sleeper", namespace=namespace)
            time.sleep(0.2)
    assert gone.value.status.code == 404
    assert time.monotonic() - started < 10
    assert (volume_dir / "signal").read_text() == "term\n"


def test_pod_ignoring_sigterm_is_killed_after_the_grace_period(
    admin: Client, namespace: str
) -> None:
    admin.create(
        shell_pod(
            "stubborn", "trap '' TERM; while :; do sleep 0.1; done", terminationGracePeriodSeconds=2
        ),
        namespace=namespace,
    )
    wait_for(admin, "stubborn", namespace, phase_in("Running"))
    started = time.monotonic()
    admin.delete(Pod, "stubborn", namespace=namespace)
    while True:
        try:
            admin.get(Pod, "stubborn", namespace=namespace)
        except ApiError as error:
            assert error.status.code == 404
            break
        time.sleep(0.2)
    assert 2 <= time.monotonic() - started < 8


def test_pod_breaking_restricted_is_rejected_at_admission(admin: Client, namespace: str) -> None:
    pod = shell_pod("rooty", "true")
    assert pod.spec is not None
    pod.spec.containers[0].securityContext = None
    with pytest.raises(ApiError) as rejected:
        admin.create(pod, namespace=namespace)
    assert rejected.value.status.code == 403
    assert 'violates PodSecurity "restricted' in str(rejected.value.status.message)


def test_runasnonroot_with_uid_zero_is_refused_by_the_node(admin: Client, namespace: str) -> None:
    pod = shell_pod("zero", "true", securityContext={})
    admin.create(pod, namespace=namespace)
    final = wait_for(
        admin,
        "zero",
        namespace,
        lambda p: any(
            s["state"].get("waiting", {}).get("reason") == "CreateContainerConfigError"
            for s in p.get("status", {}).get("containerStatuses") or []
        ),
    )
    assert final["status"]["phase"] == "Pending"


def test_serviceaccount_can_do_exactly_what_its_role_allows(
    testbed: Testbed, admin: Client, namespace: str, tmp_path: Path
) -> None:
    admin.create(load(ServiceAccount, {"metadata": {"name": "reader"}}), namespace=namespace)
    admin.create(
        load(
            Role,
            {
                "metadata": {"name": "configmap-reader"},
                "rules": [
                    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
                ],
            },
        ),
        namespace=namespace,
    )
    admin.create(
        load(
            RoleBinding,
            {
                "metadata": {"name": "reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "configmap-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        ),
        namespace=namespace,
    )
    kubeconfig = testbed.control_plane.serviceaccount_kubeconfig(
        namespace, "reader", tmp_path / "reader.kubeconfig"
    )
    reader = Client(KubeConfig.from_file(kubeconfig))
    assert reader.get(ConfigMap, "kube-root-ca.crt", namespace=namespace).data
    with pytest.raises(ApiError) as denied:
        reader.list(Secret, namespace=namespace).__iter__().__next__()
    assert denied.value.status.code == 403
    with pytest.raises(ApiError) as denied_create:
        reader.create(load(ConfigMap, {"metadata": {"name": "x"}, "data": {}}), namespace=namespace)
    assert denied_create.value.status.code == 403
    reader.close()


def test_incluster_directory_authenticates_as_the_serviceaccount(
    testbed: Testbed, namespace: str, tmp_path: Path
) -> None:
    directory = testbed.control_plane.write_incluster_dir(namespace, "default", tmp_path / "sa")
    assert (directory / "namespace").read_text() == namespace
    token = (directory / "token").read_text()
    reviewed = httpx2.post(
        f"{testbed.control_plane.server}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        headers={"Authorization": f"Bearer {token}"},
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        verify=ssl.create_default_context(cafile=str(directory / "ca.crt")),
    )
    assert reviewed.json()["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{namespace}:default"
    )


def test_init_containers_run_in_order_before_the_main_container(
    admin: Client, namespace: str
) -> None:
    shared = {"name": "work", "mountPath": "/work"}
    pod = shell_pod(
        "ordered",
        "cat /work/order",
        volumes=[{"name": "work", "emptyDir": {}}],
        container={"volumeMounts": [shared]},
        initContainers=[
            {
                "name": f"init{i}",
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", f"echo init{i} >> /work/order"],
                "securityContext": RESTRICTED_CONTAINER,
                "volumeMounts": [shared],
            }
            for i in (1, 2)
        ],
    )
    admin.create(pod, namespace=namespace)
    final = wait_for(admin, "ordered", namespace, phase_in("Succeeded", "Failed"))
    assert final["status"]["phase"] == "Succeeded"
    assert list(admin.log("ordered", namespace=namespace, newlines=False)) == ["init1", "init2"]


def test_env_from_secret_configmap_and_fieldref_and_readonly_root(
    admin: Client, namespace: str
) -> None:
    admin.create(
        load(Secret, {"metadata": {"name": "s"}, "stringData": {"key": "from-secret"}}),
        namespace=namespace,
    )
    admin.create(
        load(ConfigMap, {"metadata": {"name": "c"}, "data": {"key": "from-configmap"}}),
        namespace=namespace,
    )
    env = [
        {"name": "PLAIN", "value": "plain"},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "key"}}},
        {"name": "CONFIG", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "key"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    script = 'echo "$PLAIN $SECRET $CONFIG $POD $(pwd)"; touch /etc/x 2>/dev/null || echo ro-root'
    security = {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True}
    admin.create(
        shell_pod(
            "envy",
            script,
            container={"env": env, "workingDir": "/tmp", "securityContext": security},
        ),
        namespace=namespace,
    )
    wait_for(admin, "envy", namespace, phase_in("Succeeded", "Failed"))
    assert list(admin.log("envy", namespace=namespace, newlines=False)) == [
        "plain from-secret from-configmap envy /tmp",
        "ro-root",
    ]


def test_restart_policy_onfailure_restarts_until_success(
    admin: Client, namespace: str, volume_dir: Path
) -> None:
    script = "n=$(cat /out/n 2>/dev/null || echo 0); echo $((n+1)) > /out/n; [ $n -ge 2 ]"
    pod = shell_pod(
        "retry",
        script,
        restartPolicy="OnFailure",
        volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "transfer"}}],
        container={"volumeMounts": [{"name": "v", "mountPath": "/out"}]},
    )
    admin.create(pod, namespace=namespace)
    final = wait_for(admin, "retry", namespace, phase_in("Succeeded", "Failed"))
    assert final["status"]["phase"] == "Succeeded"
    assert final["status"]["containerStatuses"][0]["restartCount"] == 2
    assert (volume_dir / "n").read_text() == "3\n"


def test_node_is_ready_and_its_lease_is_renewed(testbed: Testbed, admin: Client) -> None:
    name = testbed.real_node.name
    node = admin.get(Node, name)
    ready = [c for c in node.status.conditions if c.type == "Ready"]  # type: ignore[union-attr]
    assert ready[0].status == "True"
    lease = admin.get(Lease, name, namespace="kube-node-lease")
    assert lease.spec is not None and lease.spec.holderIdentity == name


def test_unmatched_node_selector_leaves_the_pod_unschedulable(
    admin: Client, namespace: str
) -> None:
    admin.create(shell_pod("picky", "true", nodeSelector={"disktype": "ssd"}), namespace=namespace)
    final = wait_for(
        admin,
        "picky",
        namespace,
        lambda p: any(
            c.get("reason") == "Unschedulable" for c in p.get("status", {}).get("conditions") or []
        ),
    )
    assert not final["spec"].get("nodeName")


def test_concurrent_pods_all_complete(admin: Client, namespace: str) -> None:
    names = [f"p{i}" for i in range(6)]
    threads = [
        threading.Thread(
            target=admin.create, args=(shell_pod(n, f"echo {n}"),), kwargs={"namespace": namespace}
        )
        for n in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in names:
        final = wait_for(admin, name, namespace, phase_in("Succeeded", "Failed"))
        assert final["status"]["phase"] == "Succeeded"
        assert list(admin.log(name, namespace=namespace, newlines=False)) == [name]
