"""The `k8scc` command: the four builder steps, and `install-builder` to lay out a builder
directory the peer's core.yaml can point at."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from k8scc import steps

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
    parsed = parser.parse_args(args)
    if parsed.command == "install-builder":
        install_builder(parsed.directory, parsed.config, parsed.python)
        print(parsed.directory / "bin")
