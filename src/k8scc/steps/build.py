"""build: runs Fabric's build command for the package's platform in a builder pod and brings
the output back. BUILD_OUTPUT_DIR ends up holding what the pod built (`output/`, or with no
volume `output.tar`), `META-INF/` (the package's database artifacts) and k8scc-build.json; on
failure it is left empty. A `k8s`
package names a prebuilt image: its reference is checked and recorded, with no pod."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from k8scc import __version__, configfile, identity, names, prebuilt, render, rules
from k8scc import config as configuration
from k8scc.buildinfo import ARCHITECTURES, BuildInfo
from k8scc.cleanup import CLEANUP_SECONDS, Cleanup
from k8scc.collect import collect
from k8scc.errors import K8sccError
from k8scc.kube import Incarnation, Kube
from k8scc.log import StepLog
from k8scc.metadata import read_metadata
from k8scc.platforms import require_platform
from k8scc.steps.teardown import cleanup_seconds, pod_then_directory
from k8scc.supervise import Supervisor, failure
from k8scc.transfer import choose
from k8scc.tree import copy_tree


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _copy_metadata(source: Path, output: Path) -> None:
    if (source / "META-INF").is_dir():
        copy_tree(source / "META-INF", output / "META-INF", "META-INF")


def _record_image(source: Path, output: Path, label: str, config: Path, log: StepLog) -> int:
    try:
        image = prebuilt.read_image_json(source)
        _copy_metadata(source, output)
        BuildInfo(
            platform="k8s",
            build_image="",
            run_image=image,
            label=label,
            k8scc_version=__version__,
        ).write(output)
        configuration.record(config, output)
    except BaseException:
        _empty(output)
        raise
    log.info(f"k8s package of image {image}: nothing to build")
    return 0


def execute(argv: list[str], log: StepLog, bin_dir: Path | None) -> int:
    source, metadata_dir, output = (Path(a) for a in argv)
    metadata = read_metadata(metadata_dir)
    log.chaincode = metadata.label
    config_path = configfile.locate(bin_dir)
    config = configuration.load(config_path)
    log.debug = config.debug
    platform = require_platform(metadata.type, config.platforms, config.path)
    if not output.is_dir() or any(output.iterdir()):
        raise K8sccError(f"BUILD_OUTPUT_DIR {output} must be an existing empty directory")
    if platform.prebuilt:
        return _record_image(source, output, metadata.label, config_path, log)
    chosen = rules.effective(config, rules.BUILD, platform.name, metadata.label)
    config = chosen.config
    settings = config.platforms[platform.name]
    kube = Kube.connect(config)
    who = identity.resolve(config, kube)
    transfer = choose(config, kube, names.peer_key(who.peer_id))
    collect(kube, transfer, who.peer_id, config.leftover_age, log)
    # Builds need no stable name (nothing looks for an old one); a random part keeps two
    # installs of one package, even from peers sharing an id, apart.
    name = names.build_name(who.peer_id, metadata.label, names.nonce(8))
    supervisor = Supervisor(
        kube, log, name, render.BUILD_CONTAINER, config.start_timeout, config.stuck_timeout
    )
    pod = Incarnation("pods", name)
    cleanup = Cleanup()
    finished = threading.Event()

    cleanup.add(
        f"delete pod {name} and its transfer directory",
        pod_then_directory(kube, transfer, pod, name, log, finished),
    )
    cleanup.add("stop following the pod", lambda deadline: supervisor.close())
    try:
        transfer.stage_build(name, source)
        manifest = render.builder_pod(
            config, platform, metadata.path, metadata.label, name, who, name
        )
        created = kube.create(manifest, pod)
        log.pod = name
        log.info(
            f"building {platform.name} chaincode in image {settings.build_image}"
            + chosen.log_suffix()
        )
        outcome = supervisor.wait(
            created,
            transfer.delivery(name, render.BUILD_CONTAINER),
            container_ends=transfer.through_api,
        )
        if not outcome.succeeded:
            supervisor.drain_logs()
            raise K8sccError(
                f"build failed in pod {name}: {failure(outcome.pod, render.BUILD_CONTAINER)}"
            )
        log.info(f"taking the build output from pod {name}")
        taking = time.monotonic()
        machine = transfer.collect_build(name, output, render.ARCH_FILE).strip()
        finished.set()
        supervisor.drain_logs()
        log.info(f"took the build output in {time.monotonic() - taking:.1f} s")
        architecture = ARCHITECTURES.get(machine, "")
        if not architecture:
            log.info(f"builder node architecture {machine!r} unknown: the chaincode is not pinned")
        _copy_metadata(source, output)
        BuildInfo(
            platform=platform.name,
            build_image=settings.build_image,
            run_image=settings.run_image,
            label=metadata.label,
            k8scc_version=__version__,
            architecture=architecture,
        ).write(output)
        configuration.record(config_path, output)
    except BaseException as error:
        _empty(output)
        seconds = cleanup_seconds(kube, error)
        kube.finish_by(time.monotonic() + seconds)
        cleanup.close(seconds, log, failing=isinstance(error, K8sccError))
        raise
    try:
        # Cleaning up is part of succeeding: a pod that cannot be deleted fails the build.
        cleanup.close(config.termination_grace + CLEANUP_SECONDS, log, failing=False)
    except K8sccError:
        _empty(output)
        raise
    log.info("build succeeded")
    return 0
