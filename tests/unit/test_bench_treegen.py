"""The generated transfer tree is reproducible, exactly the asked size and of mixed sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.treegen import plan, write

pytestmark = pytest.mark.unit


def test_plan_is_deterministic_and_exact() -> None:
    files = plan(50 * 1024 * 1024)
    assert files == plan(50 * 1024 * 1024)
    assert sum(size for _, size in files) == 50 * 1024 * 1024
    assert len({path for path, _ in files}) == len(files)
    assert plan(50 * 1024 * 1024, seed=2) != files


def test_sizes_are_mixed_and_directories_nested() -> None:
    files = plan(200 * 1024 * 1024)
    sizes = [size for _, size in files]
    assert sum(s < 16 * 1024 for s in sizes) > len(sizes) * 0.8
    assert any(s > 1024 * 1024 for s in sizes)
    assert max(path.count("/") for path, _ in files) >= 2


def test_written_tree_matches_the_plan_byte_for_byte(tmp_path: Path) -> None:
    files = plan(300_000)
    write(tmp_path / "a", files)
    write(tmp_path / "b", files)
    for path, size in files:
        data = (tmp_path / "a" / path).read_bytes()
        assert len(data) == size
        assert data == (tmp_path / "b" / path).read_bytes()
