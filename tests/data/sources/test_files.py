"""Local files, folders and globs (sources/files.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from corpus_helpers import DIALOG_LINE, all_documents, open_source, raises_data_error, write


def test_folder_reads_txt_and_jsonl_files_below_it_in_name_order(tmp_path: Path):
    write(tmp_path / "books" / "b.txt", "second")
    write(tmp_path / "books" / "a" / "z.txt", "first")
    write(tmp_path / "books" / "c.jsonl", '{"text": "third"}\n')
    write(tmp_path / "books" / "notes.md", "not read")
    write(tmp_path / "books" / ".hidden" / "x.txt", "not read")
    assert all_documents(open_source(tmp_path / "books")) == ["first", "second", "third"]


def test_glob_reads_the_matching_files_in_order(tmp_path: Path):
    write(tmp_path / "b.txt", "b")
    write(tmp_path / "a.txt", "a")
    write(tmp_path / "c.md", "c")
    assert all_documents(open_source(tmp_path / "*.txt")) == ["a", "b"]


def test_folder_with_train_and_validation_folders_keeps_its_split(tmp_path: Path):
    write(tmp_path / "data" / "train" / "t.txt", "train text")
    write(tmp_path / "data" / "validation" / "v.txt", "val text")
    write(tmp_path / "data" / "test" / "x.txt", "held out")
    corpus = open_source(tmp_path / "data")
    assert corpus.splits == ("train", "validation")
    assert all_documents(corpus) == ["train text"]
    assert all_documents(corpus, "validation") == ["val text"]


def test_mixing_conversations_and_text_is_refused(tmp_path: Path):
    write(tmp_path / "mixed" / "a.txt", DIALOG_LINE)
    write(tmp_path / "mixed" / "b.txt", "plain")
    with raises_data_error("holds conversations but"):
        open_source(tmp_path / "mixed")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing.txt", "missing.txt does not exist"),
        (lambda root: (root / "books").mkdir() or root / "books", "has no .txt or .jsonl files"),
        (lambda root: root / "nothing" / "*.txt", "matches no file"),
    ],
)
def test_missing_sources_raise_a_data_error(tmp_path: Path, make: Any, message: str):
    with raises_data_error(message):
        open_source(make(tmp_path))
