"""The corpora shipped in the package (sources/builtin.py)."""

from __future__ import annotations

from pathlib import Path

from corpus_helpers import all_documents, open_source

from tinygpt.data.sources.builtin import read_builtin_corpus

TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_builtin_tinyshakespeare_is_the_recorded_corpus():
    source = read_builtin_corpus("tinyshakespeare")
    assert len(source.text) == 1_115_394
    assert source.sha256 == TINYSHAKESPEARE_SHA256
    assert source.text.startswith("First Citizen:\n")
    assert "tinyshakespeare" in source.origin


def test_builtin_corpus_matches_the_shared_copy(shared_data: Path):
    expected = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert read_builtin_corpus("tinyshakespeare").text == expected


def test_builtin_corpus_is_one_document():
    corpus = open_source("tinyshakespeare")
    assert all_documents(corpus) == [read_builtin_corpus("tinyshakespeare").text]
    assert corpus.total_bytes("train") == 1_115_394
