"""The host tools the test bed, the tests, the bench and the demo run, found the same way
whatever PATH the caller has: a fresh machine's PATH lacks directories (the Go toolchain's,
~/.local/bin) that a developer's shell may add, and a tool found only there would make a run
pass here and fail on a fresh machine."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

# What a fresh machine's login PATH holds besides toolchain directories.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where the machine image installs Go; not one of the system directories.
GO_INSTALL_DIRS = (Path("/usr/local/go/bin"),)


class ToolMissingError(RuntimeError):
    pass


@functools.cache
def go() -> Path:
    """The Go toolchain: $K8SCC_GO, else `go` on PATH, else the image's install directory."""
    if configured := os.environ.get("K8SCC_GO"):
        return Path(configured)
    found = shutil.which("go") or next(
        (str(d / "go") for d in GO_INSTALL_DIRS if (d / "go").is_file()), None
    )
    if found is None:
        raise ToolMissingError(
            "no Go toolchain: not on PATH nor in "
            + ", ".join(map(str, GO_INSTALL_DIRS))
            + "; set K8SCC_GO to its go binary"
        )
    return Path(found).resolve()


def host_path() -> str:
    """PATH for host processes that run build tools (go, npm, java): the system directories
    plus the Go toolchain's, as Fabric's ccenv image has Go on its PATH."""
    return f"{SYSTEM_PATH}:{go().parent}"


def uv() -> Path:
    """The pinned uv the Makefile installed, which `uv run` names in $UV."""
    if configured := os.environ.get("UV"):
        return Path(configured)
    raise ToolMissingError("no uv: run this through `make` (uv run sets UV)")
