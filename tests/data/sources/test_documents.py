"""Plain text to documents: `<|endoftext|>` lines, else one whole file (sources/documents.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from corpus_helpers import STORIES, all_documents, open_source, write

from tinygpt.data.sources import split_documents
from tinygpt.data.sources.builtin import read_builtin_corpus


@pytest.mark.parametrize(
    ("text", "documents"),
    [
        ("one text\n\nwith paragraphs\n", ["one text\n\nwith paragraphs\n"]),
        ("<|endoftext|>\na\n<|endoftext|>\n\n<|endoftext|>\nb", ["a", "b"]),
        ("a\n  <|endoftext|>  \nb\n", ["a", "b"]),
        ("a <|endoftext|> b\n", ["a <|endoftext|> b\n"]),  # not alone on its line
    ],
)
def test_split_documents_on_endoftext_lines_only(text: str, documents: list[str]):
    assert list(split_documents(io.StringIO(text, newline=""))) == documents


def test_endoftext_lines_split_documents_and_are_dropped(tmp_path: Path):
    corpus = open_source(write(tmp_path / "stories.txt", STORIES))
    assert all_documents(corpus) == ["Once there was a cat.\nIt sat.", "A dog ran."]
    assert corpus.splits == ("train",)
    assert corpus.total_bytes("train") == len(STORIES.encode("utf-8"))


def test_windows_line_endings_still_separate_documents(tmp_path: Path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"one\r\n<|endoftext|>\r\ntwo\r\n")
    assert all_documents(open_source(path)) == ["one", "two"]


def test_a_file_without_separators_is_one_unchanged_document(small_text_file: Path):
    assert all_documents(open_source(small_text_file)) == [
        small_text_file.read_bytes().decode("utf-8")
    ]


def test_documents_gives_a_fresh_iterator_each_call(tmp_path: Path):
    corpus = open_source(write(tmp_path / "stories.txt", STORIES))
    assert all_documents(corpus) == all_documents(corpus)


def test_tinyshakespeare_file_is_one_document(tmp_path: Path):
    path = write(tmp_path / "tinyshakespeare.txt", read_builtin_corpus("tinyshakespeare").text)
    assert all_documents(open_source(path)) == [path.read_text(encoding="utf-8")]


def test_tinystories_v2_head_splits_on_endoftext(shared_data: Path):
    documents = all_documents(open_source(shared_data / "tinystories_v2_train_head.txt"))
    assert len(documents) == 1728  # 1,727 whole stories and the cut-off last one
    assert str(documents[0]).startswith("Once upon a time there was a little boy named Ben.")
    assert not any("<|endoftext|>" in str(d) for d in documents)


def test_cs336_sample_has_five_stories(shared_data: Path):
    documents = all_documents(open_source(shared_data / "tinystories_eot_sample.txt"))
    assert len(documents) == 5
    head = all_documents(open_source(shared_data / "tinystories_v2_train_head.txt"))
    squash = lambda text: " ".join(str(text).split())  # noqa: E731
    assert [squash(d) for d in documents] == [squash(d) for d in head[:5]]
