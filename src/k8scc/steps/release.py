"""release: hands the package's CouchDB indexes to the peer, which takes database artifacts
only from the release directory once one exists."""

from __future__ import annotations

from pathlib import Path

from k8scc.log import StepLog
from k8scc.tree import copy_tree

STATEDB = Path("META-INF") / "statedb"


def execute(argv: list[str], log: StepLog, bin_dir: Path | None) -> int:
    build_output, release_dir = Path(argv[0]), Path(argv[1])
    statedb = build_output / STATEDB
    if statedb.is_dir():
        copy_tree(statedb, release_dir / "statedb", "statedb artifacts")
        count = sum(1 for p in (release_dir / "statedb").rglob("*") if p.is_file())
        log.info(f"released {count} statedb artifact(s)")
    return 0
