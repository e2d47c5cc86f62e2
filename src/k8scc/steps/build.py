"""build: runs Fabric's build command for the package's platform in a builder pod and brings
the output back. BUILD_OUTPUT_DIR ends up holding `output/` (what the pod built), `META-INF/`
(the package's database artifacts) and k8scc-build.json; on failure it is left empty."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from pathlib import Path

from k8scc import __version__, configfile, identity, names, render
from k8scc import config as configuration
from k8scc.buildinfo import BuildInfo
from k8scc.errors import K8sccError
from k8scc.kube import Kube
from k8scc.log import StepLog
from k8scc.metadata import read_metadata
from k8scc.platforms import require_platform
from k8scc.supervise import Supervisor, failure
from k8scc.transfer import OUTPUT, VolumeTransfer, copy_tree


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def execute(argv: list[str], log: StepLog, bin_dir: Path | None) -> int:
    source, metadata_dir, output = (Path(a) for a in argv)
    metadata = read_metadata(metadata_dir)
    log.chaincode = metadata.label
    config = configuration.load(configfile.locate(bin_dir))
    log.debug = config.debug
    platform = require_platform(metadata.type, config.platforms, config.path)
    settings = config.platforms[platform.name]
    if not output.is_dir() or any(output.iterdir()):
        raise K8sccError(f"BUILD_OUTPUT_DIR {output} must be an existing empty directory")
    kube = Kube.connect(config)
    who = identity.resolve(config, kube)
    # Builds need no stable name (nothing looks for an old one); a random part keeps two
    # installs of one package, even from peers sharing an id, apart.
    name = names.build_name(who.peer_id, metadata.label, secrets.token_hex(8))
    transfer = VolumeTransfer(config.transfer_mount_path)
    supervisor = Supervisor(kube, log, name, "build", config.start_timeout, config.stuck_timeout)

    def clean_up() -> None:
        supervisor.close()
        kube.delete_pod(name, grace=0)
        transfer.remove(name)

    try:
        subpath = transfer.stage_build(name, source)
        manifest = render.builder_pod(
            config, platform, metadata.path, metadata.label, name, who, subpath
        )
        pod = kube.create_pod(manifest)
        log.pod = name
        log.info(f"building {platform.name} chaincode in image {settings.build_image}")
        outcome = supervisor.wait(pod)
        if not outcome.succeeded:
            raise K8sccError(f"build failed in pod {name}: {failure(outcome.pod, 'build')}")
        transfer.collect_build(name, output / OUTPUT)
        if (source / "META-INF").is_dir():
            copy_tree(source / "META-INF", output / "META-INF", "META-INF")
        BuildInfo(
            platform=platform.name,
            build_image=settings.build_image,
            run_image=settings.run_image,
            label=metadata.label,
            k8scc_version=__version__,
        ).write(output)
        # Cleaning up is part of succeeding: a pod that cannot be deleted fails the build.
        clean_up()
    except BaseException:
        _empty(output)
        with contextlib.suppress(K8sccError):
            clean_up()
        raise
    log.info("build succeeded")
    return 0
