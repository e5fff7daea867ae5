"""build_folder: every model cache entry appears whole or not at all."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mmlm_stream.util.atomic_folder import build_folder


def _write(text: str):
    def fill(folder: Path) -> None:
        (folder / "config.json").write_text(text)

    return fill


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def test_a_built_folder_is_in_place_and_readable_by_others(tmp_path: Path):
    target = tmp_path / "cache" / "model"
    assert build_folder(target, _write("a"), complete=_complete)
    assert (target / "config.json").read_text() == "a"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["model"]  # no staging left


def test_a_builder_that_comes_second_keeps_the_complete_folder(tmp_path: Path):
    target = tmp_path / "model"
    build_folder(target, _write("first"), complete=_complete)
    assert not build_folder(target, _write("second"), complete=_complete)
    assert (target / "config.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_an_incomplete_folder_in_the_way_is_an_error_unless_replaced(tmp_path: Path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "partial.bin").write_text("x")
    with pytest.raises(OSError):
        build_folder(target, _write("new"), complete=_complete)
    assert build_folder(target, _write("new"), complete=_complete, replace=True)
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failing_fill_leaves_nothing_behind(tmp_path: Path):
    def broken(folder: Path) -> None:
        (folder / "half.bin").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_folder(tmp_path / "model", broken, complete=_complete)
    assert list(tmp_path.iterdir()) == []
