"""Pure rendering of the objects k8scc creates: the builder pod, the chaincode pod and the
per-launch TLS Secret. Nothing here talks to Kubernetes, so tests and tools see exactly
what the steps create.

Pods are admitted under PodSecurity `restricted`: non-root with explicit ids, no privilege
escalation, no capabilities, RuntimeDefault seccomp, no ServiceAccount token, and a read-only
root filesystem for chaincode (builders write caches below their image's GOPATH or HOME, or
in their scope of the build cache, which an init container of the same hardening prepares). A
platform run as its image's own user (fabric-javaenv: root) keeps all of that but the ids and
runAsNonRoot, which PodSecurity `baseline` admits. A prebuilt image (a `k8s` package) runs as
its image's own user too, but with runAsNonRoot: `restricted` still admits it, and the kubelet
refuses an image whose user is root or a name.
"""

from __future__ import annotations

import base64
from typing import Any

from k8scc import buildcache, names, podscripts
from k8scc.config import BuildCache, Config, PlatformConfig, Resources
from k8scc.metadata import ChaincodeJson
from k8scc.peer import Identity, Owner
from k8scc.platforms import CACHE_DIR, INPUT_DIR, OUTPUT_DIR, SCRATCH_DIR, Platform

TLS_DIR = "/etc/hyperledger/fabric"
# Where the builder leaves `uname -m` of its node, taken out before the output is collected.
ARCH_FILE = ".k8scc-machine"
ARCH_LABEL = "kubernetes.io/arch"
TRANSFER_VOLUME = "transfer"
CHAINCODE_CONTAINER = "chaincode"
BUILD_CONTAINER = "build"
CACHE_VOLUME = "cache"
# How long after a build marked its cache scope the scope counts as in use, beyond the build's
# own timeout: the pod's deadline runs from its start, a little before the mark.
CACHE_IN_USE_MARGIN = 60


def _resources(resources: Resources) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    if resources.requests:
        rendered["requests"] = dict(resources.requests)
    if resources.limits:
        rendered["limits"] = dict(resources.limits)
    return rendered


def _container_security(platform: PlatformConfig, read_only_root: bool) -> dict[str, Any]:
    security: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": read_only_root,
    }
    if platform.non_root:
        security["runAsNonRoot"] = True
    return security


def _home(platform: PlatformConfig) -> dict[str, str]:
    """A uid of k8scc's choosing may have no home in the image; the image's own user has one
    (fabric-javaenv's wrappers and caches are found through it)."""
    return {} if platform.run_as_user is None else {"HOME": SCRATCH_DIR}


def _pod_spec(config: Config, platform: PlatformConfig, grace: int) -> dict[str, Any]:
    security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if platform.non_root:
        security["runAsNonRoot"] = True
    if platform.run_as_user is not None:
        security.update(
            runAsUser=platform.run_as_user,
            runAsGroup=platform.run_as_group,
            fsGroup=platform.run_as_group,
        )
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace,
        "securityContext": security,
    }
    if config.service_account_name:
        spec["serviceAccountName"] = config.service_account_name
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = list(config.tolerations)
    if config.affinity:
        spec["affinity"] = dict(config.affinity)
    if config.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in config.image_pull_secrets]
    if config.host_aliases:
        spec["hostAliases"] = list(config.host_aliases)
    return spec


def _metadata(
    name: str, labels: dict[str, str], annotations: dict[str, str], *owners: Owner | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
    if any(owners):
        metadata["ownerReferences"] = [owner.reference() for owner in owners if owner]
    return metadata


def _env(variables: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": key, "value": value} for key, value in variables.items()]


def _env_from(config: Config) -> dict[str, Any]:
    return {"envFrom": list(config.env_from)} if config.env_from else {}


def _cache_preparer(
    config: Config,
    cache: BuildCache,
    settings: PlatformConfig,
    resources: dict[str, Any],
    platform_dir: str,
    scope_dir: str,
) -> dict[str, Any]:
    """The init container that makes the build's cache scope and prunes the platform's."""
    keep = int(config.build_timeout) + CACHE_IN_USE_MARGIN
    container: dict[str, Any] = {
        "name": CACHE_VOLUME,
        "image": settings.build_image,
        "imagePullPolicy": config.image_pull_policy,
        "args": [
            "/bin/sh",
            "-c",
            buildcache.PREPARE_SCRIPT,
            "k8scc-cache",
            platform_dir,
            scope_dir,
            str(cache.max_kib),
            str(keep),
        ],
        "securityContext": _container_security(settings, read_only_root=True),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": buildcache.CLAIM_DIR}],
    }
    if resources:
        container["resources"] = resources
    return container


def _through_api(config: Config) -> bool:
    return config.transfer_mode == "api"


def _transfer_volume(config: Config, read_only: bool) -> dict[str, Any]:
    """The pod's files: an emptyDir the receiver fills through the API, or the shared claim."""
    if _through_api(config):
        return {"name": TRANSFER_VOLUME, "emptyDir": {}}
    claim = {"claimName": config.transfer_claim, **({"readOnly": True} if read_only else {})}
    return {"name": TRANSFER_VOLUME, "persistentVolumeClaim": claim}


def _transfer_path(config: Config, directory: str, part: str) -> str:
    """The subPath of a pod's input or output: in its own emptyDir, or in its directory on
    the claim."""
    return part if _through_api(config) else f"{directory}/{part}"


def _receiving(config: Config, container: dict[str, Any], script: str) -> None:
    """Makes the container take the files streamed into it: it waits for them (failing after
    timeouts.start) before its own command, so that no init container has to exit first (the
    kubelet would notice that only at its next relist of container states, up to a second
    later), and mounts the pod's emptyDir where the stream unpacks them. `script` is
    podscripts.WAIT_THEN_EXEC or, for a build, WAIT_THEN_BUILD."""
    seconds = str(max(1, int(config.start_timeout)))
    wait = ["/bin/sh", "-c", script, "k8scc-wait", seconds]
    container["args"] = [*wait, *container["args"]]
    container["volumeMounts"].append({"name": TRANSFER_VOLUME, "mountPath": podscripts.POD_DIR})


def builder_pod(
    config: Config,
    platform: Platform,
    metadata_path: str,
    label: str,
    name: str,
    identity: Identity,
    transfer_dir: str,
) -> dict[str, Any]:
    """The pod running Fabric's build command for the platform, with `/chaincode/input`
    read-only and `/chaincode/output` writable from subPaths of the transfer volume, and the
    chaincode's scope of the build cache, when one is configured, at CACHE_DIR."""
    settings = config.platforms[platform.name]
    cache = config.build_cache
    script = platform.build_script(metadata_path, cache is not None)
    # Builders run as a non-root uid, so the output is opened to whoever reads it back, keeping
    # the build's exit status.
    wrapper = (
        f'/bin/sh -c "$1"; status=$?; uname -m > {OUTPUT_DIR}/{ARCH_FILE};'
        f" chmod -R a+rwX {OUTPUT_DIR} 2>/dev/null; exit $status"
    )
    container: dict[str, Any] = {
        "name": BUILD_CONTAINER,
        "image": settings.build_image,
        "imagePullPolicy": config.image_pull_policy,
        # Only arguments, as Fabric sets only the container's Cmd: the image's ENTRYPOINT still
        # runs first (eclipse-temurin's installs operators' CA certificates when asked).
        "args": ["/bin/sh", "-c", wrapper, "k8scc-build", script],
        "env": _env(
            {
                **_home(settings),
                **dict(platform.default_build_env),
                **(dict(platform.cache_env) if cache else {}),
                **config.build_env,
                **settings.build_env,
            }
        ),
        "securityContext": _container_security(settings, read_only_root=False),
        **_env_from(config),
        "volumeMounts": [
            {
                "name": TRANSFER_VOLUME,
                "mountPath": INPUT_DIR,
                "subPath": _transfer_path(config, transfer_dir, "input"),
                "readOnly": True,
            },
            {
                "name": TRANSFER_VOLUME,
                "mountPath": OUTPUT_DIR,
                "subPath": _transfer_path(config, transfer_dir, "output"),
            },
            {"name": "scratch", "mountPath": SCRATCH_DIR},
        ],
    }
    if platform.build_workdir:
        container["workingDir"] = platform.build_workdir
    resources = _resources(config.builder_resources)
    if resources:
        container["resources"] = resources
    spec = _pod_spec(config, settings, grace=config.termination_grace)
    spec["activeDeadlineSeconds"] = max(1, int(config.build_timeout))
    spec["containers"] = [container]
    spec["volumes"] = [
        _transfer_volume(config, read_only=False),
        {"name": "scratch", "emptyDir": {}},
    ]
    spec["initContainers"] = []
    if _through_api(config):
        _receiving(config, container, podscripts.WAIT_THEN_BUILD)
    if cache:
        platform_dir = buildcache.platform_dir(platform.name, settings.run_as_user)
        scope_dir = buildcache.scope_dir(label, cache.scope)
        container["volumeMounts"].append(
            {"name": CACHE_VOLUME, "mountPath": CACHE_DIR, "subPath": f"{platform_dir}/{scope_dir}"}
        )
        spec["initContainers"].append(
            _cache_preparer(config, cache, settings, resources, platform_dir, scope_dir)
        )
        spec["volumes"].append(
            {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.claim}}
        )
        if "fsGroup" in spec["securityContext"]:
            # Volumes that apply fsGroup would re-own a whole cache at every build otherwise.
            spec["securityContext"]["fsGroupChangePolicy"] = "OnRootMismatch"
    if not spec["initContainers"]:
        del spec["initContainers"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(
            name,
            names.pod_labels("build", identity.peer_id, label, extra=config.labels),
            names.pod_annotations(
                identity.peer_id, label, extra=config.annotations, instance=identity.instance
            ),
            identity.owner,
        ),
        "spec": spec,
    }


def chaincode_env(config: Config, chaincode: ChaincodeJson) -> dict[str, str]:
    """The environment Fabric's Docker launcher gives chaincode, with the TLS files in Secret,
    after the operator's own variables."""
    env = {
        **config.chaincode_env,
        "CORE_CHAINCODE_ID_NAME": chaincode.chaincode_id,
        # Prebuilt images pass it to their shim themselves; Fabric's launch arguments carry it.
        "CORE_PEER_ADDRESS": chaincode.peer_address,
        "CORE_PEER_TLS_ENABLED": "true" if chaincode.tls else "false",
        "CORE_PEER_LOCALMSPID": chaincode.mspid,
        **config.chaincode_logging,
    }
    if chaincode.tls:
        env.update(
            {
                "CORE_TLS_CLIENT_KEY_PATH": f"{TLS_DIR}/client.key",
                "CORE_TLS_CLIENT_CERT_PATH": f"{TLS_DIR}/client.crt",
                "CORE_TLS_CLIENT_KEY_FILE": f"{TLS_DIR}/client_pem.key",
                "CORE_TLS_CLIENT_CERT_FILE": f"{TLS_DIR}/client_pem.crt",
                "CORE_PEER_TLS_ROOTCERT_FILE": f"{TLS_DIR}/peer.crt",
            }
        )
    env["HOME"] = SCRATCH_DIR
    return env


def chaincode_pod(
    config: Config,
    platform: Platform,
    run_image: str,
    chaincode: ChaincodeJson,
    name: str,
    identity: Identity,
    launch: str,
    architecture: str = "",
) -> dict[str, Any]:
    """The chaincode in its runtime image, started with the platform's launch command; the build
    output is read-only at the platform's directory from the transfer directory `launch`, the
    TLS files come from the Secret `launch`. A build for one `architecture` runs on nodes of
    that architecture, unless the operator's pod.nodeSelector names one itself. A prebuilt
    image holds its chaincode and starts it with its own entrypoint: it mounts no build output.
    """
    settings = config.platforms[platform.name]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH_DIR}]
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    if not platform.prebuilt:
        # Through the API, the output is unpacked as `input` of the pod's emptyDir.
        part = "input" if _through_api(config) else "output"
        mounts.insert(
            0,
            {
                "name": TRANSFER_VOLUME,
                "mountPath": platform.output_dir,
                "subPath": _transfer_path(config, launch, part),
                "readOnly": True,
            },
        )
        volumes.insert(0, _transfer_volume(config, read_only=True))
    if chaincode.tls:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": launch, "defaultMode": 0o440}})
    container: dict[str, Any] = {
        "name": CHAINCODE_CONTAINER,
        "image": run_image,
        "imagePullPolicy": config.image_pull_policy,
        "env": _env(chaincode_env(config, chaincode)),
        **_env_from(config),
        "securityContext": _container_security(settings, read_only_root=True),
        "volumeMounts": mounts,
    }
    if not platform.prebuilt:
        container["args"] = platform.launch(chaincode.peer_address)
        container["workingDir"] = platform.output_dir
        if _through_api(config):
            _receiving(config, container, podscripts.WAIT_THEN_EXEC)
    resources = _resources(config.chaincode_resources)
    if resources:
        container["resources"] = resources
    spec = _pod_spec(config, settings, grace=config.termination_grace)
    if architecture and ARCH_LABEL not in config.node_selector:
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), ARCH_LABEL: architecture}
    spec["containers"] = [container]
    spec["volumes"] = volumes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(
            name,
            names.pod_labels(
                "run", identity.peer_id, chaincode.label, chaincode.package_hash, config.labels
            ),
            names.pod_annotations(
                identity.peer_id,
                chaincode.label,
                chaincode.chaincode_id,
                chaincode.mspid,
                config.annotations,
                identity.instance,
            ),
            identity.owner,
        ),
        "spec": spec,
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tls_secret(
    chaincode: ChaincodeJson,
    name: str,
    identity: Identity,
    config: Config,
    pod: Owner | None = None,
) -> dict[str, Any]:
    """TLS files laid out as Fabric's Docker launcher does: raw PEM for the `_FILE` variables and
    `peer.crt`, base64 of the PEM for the `_PATH` variables the Node and Java shims read. Owned
    by the chaincode `pod` that mounts it, once that exists, and by the peer's pod."""
    files = {
        "client_pem.crt": chaincode.client_cert.encode(),
        "client_pem.key": chaincode.client_key.encode(),
        "peer.crt": chaincode.root_cert.encode(),
        "client.crt": _b64(chaincode.client_cert.encode()).encode(),
        "client.key": _b64(chaincode.client_key.encode()).encode(),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(
            name,
            names.pod_labels(
                "run", identity.peer_id, chaincode.label, chaincode.package_hash, config.labels
            ),
            names.pod_annotations(
                identity.peer_id,
                chaincode.label,
                chaincode.chaincode_id,
                chaincode.mspid,
                instance=identity.instance,
            ),
            pod,
            identity.owner,
        ),
        "data": {key: _b64(value) for key, value in files.items()},
    }


def redacted(secret: dict[str, Any]) -> dict[str, Any]:
    """The Secret as it may be shown: keys kept, values replaced."""
    return {**secret, "data": dict.fromkeys(secret.get("data", {}), "<redacted>")}
