"""A deterministic source tree of mixed file sizes, like a chaincode package with vendored
dependencies: mostly small files, some medium ones and a few large ones, in nested
directories. The same seed and size always give the same paths, sizes and bytes."""

from __future__ import annotations

import random
from pathlib import Path

# (share of the file count, smallest size, largest size)
_CLASSES = ((0.90, 200, 16 * 1024), (0.09, 16 * 1024, 1024 * 1024), (0.01, 1024**2, 8 * 1024**2))
_FILES_PER_DIR = 40
_DIRS_PER_DIR = 6


def _size(rng: random.Random) -> int:
    pick = rng.random()
    for share, low, high in _CLASSES:
        if pick < share:
            return rng.randint(low, high)
        pick -= share
    return _CLASSES[-1][2]


def _directory(index: int) -> str:
    """Directory number `index` of a tree _DIRS_PER_DIR wide: 0 is the root."""
    parts = []
    while index:
        index -= 1
        parts.append(f"d{index % _DIRS_PER_DIR}")
        index //= _DIRS_PER_DIR
    return "/".join(reversed(parts))


def plan(total_bytes: int, seed: int = 1) -> list[tuple[str, int]]:
    """(relative path, size) of every file; the sizes add up to exactly `total_bytes`."""
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not secrets)
    files: list[tuple[str, int]] = []
    left = total_bytes
    while left > 0:
        size = min(_size(rng), left)
        directory = _directory(len(files) // _FILES_PER_DIR)
        name = f"f{len(files) % _FILES_PER_DIR}.dat"
        files.append((f"{directory}/{name}" if directory else name, size))
        left -= size
    return files


def write(root: Path, files: list[tuple[str, int]], seed: int = 1) -> None:
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not secrets)
    for relative, size in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
