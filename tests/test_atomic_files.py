"""publish_directory: a folder appears whole or not at all."""

from pathlib import Path

import pytest

from tinygpt.atomic_files import publish_directory


def _write_two(directory: Path) -> None:
    (directory / "a").write_text("1")
    (directory / "b").write_text("2")


def test_publish_directory_renames_a_full_folder_into_place(tmp_path):
    target = tmp_path / "out"
    assert publish_directory(target, _write_two)
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left


def test_a_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    def fail(directory: Path) -> None:
        (directory / "a").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish_directory(tmp_path / "out", fail)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_is_replaced_or_kept_as_asked(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("x")
    assert not publish_directory(target, _write_two, keep_existing=lambda _: True)
    assert [p.name for p in target.iterdir()] == ["old"]
    assert publish_directory(target, _write_two)
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"]
