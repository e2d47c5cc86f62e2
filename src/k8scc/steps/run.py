"""run: launches the built chaincode in its own pod with the TLS material of this launch in a
Secret, streams its output into the peer's log, and stays until the pod ends: exit 0 when it
succeeds, non-zero when it fails or disappears. On SIGTERM the pod and Secret are deleted."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from k8scc import buildinfo, configfile, identity, names, render, rules
from k8scc import config as configuration
from k8scc.background import Background
from k8scc.cleanup import Cleanup
from k8scc.errors import K8sccError
from k8scc.kube import Incarnation, Kube
from k8scc.log import StepLog
from k8scc.metadata import read_chaincode_json
from k8scc.peer import Owner
from k8scc.platforms import require_platform
from k8scc.steps.teardown import cleanup_seconds, pod_and_directory
from k8scc.transfer import choose

if TYPE_CHECKING:
    from k8scc.supervise import Supervisor

# How long the pod of an earlier launch may take to stop, beyond its grace period.
REPLACE_SECONDS = 30.0


def execute(argv: list[str], log: StepLog, bin_dir: Path | None) -> int:
    build_output, run_metadata = Path(argv[0]), Path(argv[1])
    chaincode = read_chaincode_json(run_metadata)
    log.chaincode = chaincode.chaincode_id
    info = buildinfo.read(build_output)
    config = configuration.load(configfile.locate(bin_dir), recorded_in=build_output)
    log.debug = config.debug
    platform = require_platform(info.platform, config.platforms, config.path)
    chosen = rules.effective(
        config, rules.RUN, platform.name, chaincode.label, chaincode.chaincode_id
    )
    config = chosen.config
    image = chosen.run_image or info.run_image
    kube = Kube.connect(config)
    # The handshakes overlap with the output's copy and the pod's rendering.
    kube.open_ahead()
    who = identity.resolve(config, kube)
    transfer = choose(config, kube, names.peer_key(who.peer_id))
    name = names.chaincode_name(who.peer_id, chaincode.chaincode_id)
    log.pod = name
    launch = names.launch_name(name, names.nonce(4))
    # Only what this launch created, by uid or create id: a newer launch may own the name.
    pod = Incarnation("pods", name)
    secret = Incarnation("secrets", launch)
    cleanup = Cleanup()
    supervisor: Supervisor | None = None

    def pod_gone(uid: str, deadline: float) -> bool:
        # The watch that follows the pod sees it go: its end needs no request of its own.
        seen = supervisor.wait_deleted(deadline) if supervisor is not None else None
        if seen is None:
            return kube.wait_pod_deleted(name, uid, deadline - time.monotonic())
        return seen

    def stop_following(_: float) -> None:
        if supervisor is not None:
            supervisor.close()

    # Undone newest first: the Secret (one quick request) before the pod, whose graceful stop
    # may take the rest of the time, and the pod followed (its last lines too) until it is gone.
    cleanup.add("stop following the pod", stop_following)
    cleanup.add(
        f"delete pod {name} and its transfer directory",
        pod_and_directory(kube, transfer, pod, launch, log, pod_gone),
    )
    if chaincode.tls:
        cleanup.add(f"delete secret {launch}", lambda _: kube.remove_secret(secret))
    # A pod reads the volume as it starts; files through the API are packed while the pod is
    # scheduled and started, since its chaincode container waits for them.
    stage_first = not platform.prebuilt and not transfer.through_api
    staging: Background | None = None
    try:
        if stage_first:
            staging = Background(lambda: transfer.stage_run(launch, build_output))
        manifest = render.chaincode_pod(
            config, platform, image, chaincode, name, who, launch, info.architecture
        )
        if staging is not None:
            staging.result()
        created = kube.replace_pod(manifest, pod, REPLACE_SECONDS + config.termination_grace)
        if chaincode.tls:
            # Created once the pod is accepted, owned by it from the start, so it goes with the
            # pod if `run` cannot delete it itself. The kubelet mounts it only after the pod is
            # scheduled, and would retry a mount that came too early.
            owner = Owner(name=name, uid=created["metadata"]["uid"])
            kube.create(render.tls_secret(chaincode, launch, who, config, owner), secret)
        if not platform.prebuilt and not stage_first:
            transfer.stage_run(launch, build_output)
        # Directories of earlier launches killed before cleaning up; their pods are gone now.
        transfer.sweep(name, keep=launch)
        # Loaded only now: following the pod and collecting leftovers are off the path to its
        # create and its Secret's, which every launch waits for.
        from k8scc.collect import collect  # noqa: PLC0415
        from k8scc.supervise import Supervisor, failure  # noqa: PLC0415

        supervisor = Supervisor(
            kube, log, name, render.CHAINCODE_CONTAINER, config.start_timeout, config.stuck_timeout
        )
        cleanup.add("end following the pod", lambda _: supervisor.expect_deletion())
        # What killed steps left waits until the pod is on its way: the launch needs none of it.
        collect(kube, transfer, who.peer_id, config.leftover_age, log)
        log.info(f"chaincode pod started in image {image}" + chosen.log_suffix())
        # Files through the API go into the chaincode container, which waits for them.
        delivery = (
            None if platform.prebuilt else transfer.delivery(name, render.CHAINCODE_CONTAINER)
        )
        outcome = supervisor.wait(created, delivery)
        if outcome.succeeded:
            log.info("chaincode exited")
            return 0
        raise K8sccError(
            f"chaincode pod {name} failed: {failure(outcome.pod, render.CHAINCODE_CONTAINER)}"
        )
    finally:
        if staging is not None:
            staging.join()  # before the cleanup removes what it copies
        error = sys.exc_info()[1]
        seconds = cleanup_seconds(kube, error)
        kube.finish_by(time.monotonic() + seconds)
        cleanup.close(seconds, log, isinstance(error, K8sccError))
