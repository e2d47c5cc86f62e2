"""run: launches the built chaincode in its own pod with the TLS material of this launch in a
Secret, streams its output into the peer's log, and stays until the pod ends: exit 0 when it
succeeds, non-zero when it fails or disappears. On SIGTERM the pod and Secret are deleted."""

from __future__ import annotations

from pathlib import Path

from k8scc import buildinfo, configfile, identity, names, render
from k8scc import config as configuration
from k8scc.errors import K8sccError
from k8scc.kube import Kube
from k8scc.log import StepLog
from k8scc.metadata import read_chaincode_json
from k8scc.platforms import require_platform
from k8scc.supervise import Supervisor, failure
from k8scc.transfer import OUTPUT, VolumeTransfer

REPLACE_SECONDS = 30.0


def execute(argv: list[str], log: StepLog, bin_dir: Path | None) -> int:
    build_output, run_metadata = Path(argv[0]), Path(argv[1])
    chaincode = read_chaincode_json(run_metadata)
    log.chaincode = chaincode.chaincode_id
    info = buildinfo.read(build_output)
    config = configuration.load(configfile.locate(bin_dir))
    log.debug = config.debug
    platform = require_platform(info.platform, config.platforms, config.path)
    kube = Kube.connect(config)
    who = identity.resolve(config, kube)
    name = names.chaincode_name(who.peer_id, chaincode.chaincode_id)
    log.pod = name
    transfer = VolumeTransfer(config.transfer_mount_path)
    supervisor = Supervisor(
        kube, log, name, "chaincode", config.start_timeout, config.stuck_timeout
    )
    subpath: str | None = None
    pod_uid: str | None = None
    secret_uid: str | None = None
    try:
        subpath = transfer.stage_run(name, build_output / OUTPUT)
        if chaincode.tls:
            secret = render.tls_secret(chaincode, name, who, config)
            secret_uid = kube.replace_secret(secret)["metadata"]["uid"]
        manifest = render.chaincode_pod(
            config, platform, info.run_image, chaincode, name, who, subpath
        )
        pod = kube.replace_pod(manifest, wait_seconds=REPLACE_SECONDS)
        pod_uid = pod["metadata"]["uid"]
        # Directories of earlier launches killed before cleaning up; their pods are gone now.
        transfer.sweep(name, keep=subpath)
        if chaincode.tls:
            # The Secret goes with the pod if `run` cannot delete it itself.
            pod_ref = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": name,
                "uid": pod["metadata"]["uid"],
            }
            owners = [pod_ref] + ([who.owner.reference()] if who.owner else [])
            kube.set_secret_owners(name, owners)
        log.info(f"chaincode pod started in image {info.run_image}")
        outcome = supervisor.wait(pod)
        if outcome.succeeded:
            log.info("chaincode exited")
            return 0
        raise K8sccError(f"chaincode pod {name} failed: {failure(outcome.pod, 'chaincode')}")
    finally:
        supervisor.close()
        kube.retry_seconds = 2.0
        # Only what this launch created (by uid): a newer launch may own the names by now.
        if pod_uid is not None:
            kube.delete_pod(name, grace=config.termination_grace, uid=pod_uid)
        if secret_uid is not None:
            kube.delete_secret(name, uid=secret_uid)
        if subpath is not None:
            transfer.remove(subpath)
