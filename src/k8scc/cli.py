"""The `k8scc` command: the four builder steps, `install-builder` to lay out a builder
directory the peer's core.yaml can point at, `core-yaml` to add that directory to a core.yaml,
`render` to show the exact objects a step would create without creating anything, and `doctor`
to check a peer's setup."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from k8scc import buildinfo, config, coreyaml, doctor, identity, names, render, rules, steps
from k8scc.errors import K8sccError
from k8scc.kube import Kube
from k8scc.metadata import read_chaincode_json, read_metadata
from k8scc.peer import Identity
from k8scc.platforms import require_platform

STEPS = ("detect", "build", "release", "run")
_BIN_SCRIPT = """#!{python}
# k8scc {step}: written by `k8scc install-builder`; runs with the interpreter k8scc is installed in.
from k8scc.steps import entry

entry("{step}")
"""


def install_builder(directory: Path, config: Path | None, python: str) -> None:
    """Writes DIR/bin/{detect,build,release,run} and, when given, DIR/k8scc.yaml."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for step in STEPS:
        script = bin_dir / step
        script.write_text(_BIN_SCRIPT.format(python=python, step=step))
        script.chmod(0o755)
    if config is not None:
        shutil.copyfile(config, directory / "k8scc.yaml")


def render_step(step: str, config_file: Path, directory: Path, metadata_or_run: Path) -> str:
    """The builder pod (`build`: source dir, metadata dir) or the chaincode pod and its Secret,
    data redacted (`run`: build output dir, run metadata dir), as YAML."""
    settings = config.load(config_file)
    peer, note = _identity(settings)
    if step == "build":
        metadata = read_metadata(metadata_or_run)
        platform = require_platform(metadata.type, settings.platforms, config_file)
        chosen = rules.effective(settings, rules.BUILD, platform.name, metadata.label)
        name = names.build_name(peer.peer_id, metadata.label, "render")
        objects = [
            render.builder_pod(
                chosen.config, platform, metadata.path, metadata.label, name, peer, name
            )
        ]
    else:
        chaincode = read_chaincode_json(metadata_or_run)
        info = buildinfo.read(directory)
        platform = require_platform(info.platform, settings.platforms, config_file)
        chosen = rules.effective(
            settings, rules.RUN, platform.name, chaincode.label, chaincode.chaincode_id
        )
        name = names.chaincode_name(peer.peer_id, chaincode.chaincode_id)
        launch = names.launch_name(name, "render")  # random per launch
        objects = [
            render.chaincode_pod(
                chosen.config,
                platform,
                chosen.run_image or info.run_image,
                chaincode,
                name,
                peer,
                launch,
                info.architecture,
            )
        ]
        if chaincode.tls:
            objects.append(render.redacted(render.tls_secret(chaincode, launch, peer, settings)))
    note += f"# chaincodes rules applied: {chosen.applied or 'none'}\n"
    return note + yaml.safe_dump_all(objects, sort_keys=False)


def _identity(settings: config.Config) -> tuple[Identity, str]:
    """The peer as the steps resolve it, owner pod included; when the owner cannot be looked
    up from here, the objects go without it and a YAML comment says why."""
    if identity.owner_pod_name(settings) is None:
        return identity.unowned(settings), ""
    try:
        return identity.resolve(settings, Kube.connect(settings)), ""
    except K8sccError as error:
        return identity.unowned(settings), f"# owner: not looked up: {error}\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in STEPS:
        sys.exit(steps.main(args[0], args[1:], None))
    parser = argparse.ArgumentParser(
        prog="k8scc", description="Fabric external chaincode builder and launcher for Kubernetes"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for step in STEPS:
        commands.add_parser(step, help=f"the {step} step: {steps.USAGE[step]}")
    install = commands.add_parser("install-builder", help="write a builder directory")
    install.add_argument("directory", type=Path)
    install.add_argument("--config", type=Path, help="k8scc.yaml to place beside bin/")
    install.add_argument(
        "--python", default=sys.executable, help="interpreter for bin/* (default: this one)"
    )
    show = commands.add_parser("render", help="print what a step would create, creating nothing")
    show.add_argument("step", choices=("build", "run"))
    show.add_argument("--config", type=Path, required=True, help="the k8scc.yaml to use")
    show.add_argument("directory", type=Path, help="build: source dir; run: build output dir")
    show.add_argument("metadata", type=Path, help="build: metadata dir; run: run metadata dir")
    check = commands.add_parser("doctor", help="check this peer's setup, printing a table")
    check.add_argument("--config", type=Path, help="the k8scc.yaml (default: as the steps find it)")
    check.add_argument("--builder-dir", type=Path, help="the builder directory holding bin/")
    check.add_argument(
        "--label",
        help="also show the chaincodes rules a package label gets, and dry-run its pods with them",
    )
    check.add_argument("--package-id", help="with --label: the package id, for rules matching it")
    core = commands.add_parser(
        "core-yaml",
        help="add k8scc to a core.yaml's chaincode.externalBuilders",
        description="Prints CORE_YAML (or, without it, a document holding only the entry) with"
        " exactly one chaincode.externalBuilders entry named NAME, replacing an entry of that name"
        " and keeping the other builders in order. The file is rewritten by PyYAML: comments are"
        " dropped.",
    )
    core.add_argument("core_yaml", nargs="?", type=Path, metavar="CORE_YAML")
    core.add_argument(
        "--builder-dir",
        type=Path,
        default=coreyaml.DEFAULT_BUILDER_DIR,
        metavar="DIR",
        help="the directory install-builder wrote (default: %(default)s)",
    )
    core.add_argument("--name", default=coreyaml.DEFAULT_NAME, help="default: %(default)s")
    core.add_argument(
        "--propagate",
        action="append",
        default=[],
        metavar="VAR",
        help="one more variable for propagateEnvironment (repeatable), after "
        + ", ".join(coreyaml.DEFAULT_PROPAGATE),
    )
    core.add_argument(
        "--in-place", action="store_true", help="replace CORE_YAML instead of printing"
    )
    parsed = parser.parse_args(args)
    if parsed.command == "install-builder":
        install_builder(parsed.directory, parsed.config, parsed.python)
        print(parsed.directory / "bin")
    elif parsed.command == "render":
        try:
            print(
                render_step(parsed.step, parsed.config, parsed.directory, parsed.metadata), end=""
            )
        except K8sccError as error:
            sys.exit(f"k8scc render: error: {error}")
    elif parsed.command == "doctor":
        sys.exit(
            doctor.main(
                parsed.config,
                parsed.builder_dir,
                label=parsed.label,
                package_id=parsed.package_id,
            )
        )
    elif parsed.command == "core-yaml":
        try:
            entry = coreyaml.builder_entry(parsed.builder_dir, parsed.name, parsed.propagate)
            text = coreyaml.core_yaml(parsed.core_yaml, entry, parsed.in_place)
        except K8sccError as error:
            sys.exit(f"k8scc core-yaml: error: {error}")
        if text is not None:
            print(text, end="")
