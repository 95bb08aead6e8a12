"""Which text is validation, and the pieces one long text is cut in (prepare/splitting.py)."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pytest
from corpus_helpers import CAT_STORIES
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.config import DataConfig
from tinygpt.data.memmap import open_tokens
from tinygpt.data.prepare import PreparedData, is_validation, prepare_dataset, splitting
from tinygpt.data.sources.builtin import read_builtin_corpus
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.tokenizers.bpe import BPETokenizer


def decoded_documents(prepared, split: str) -> list[str]:
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    path = prepared.train_path if split == "train" else prepared.val_path
    text = tokenizer.decode(open_tokens(path, prepared.dtype).tolist())
    return [doc for doc in text.split("\n\n") if doc]


def test_documents_are_split_whole_and_never_cut(stories_file: Path, tmp_path: Path):
    prepared = prepare_dataset(DataConfig(source=str(stories_file)), cache_dir=tmp_path / "c")
    train, val = decoded_documents(prepared, "train"), decoded_documents(prepared, "val")
    assert sorted(train + val) == sorted(CAT_STORIES)
    assert not set(train) & set(val)
    assert len(val) == pytest.approx(20, abs=2)  # val_fraction 0.1 of 200 documents


def shakespeare_lines() -> list[str]:
    """Lines of real text, without the blank lines that the char tokenizer's separator is."""
    return [
        line for line in read_builtin_corpus("tinyshakespeare").text[:200_000].splitlines() if line
    ]


def big_files() -> list[str]:
    """Three texts without separators, 40/30/30 of 60,000 characters."""
    text = "\n".join(shakespeare_lines())[:60_000]
    return [text[:24_000], text[24_000:42_000], text[42_000:]]


def stories(count: int) -> list[str]:
    """Short documents of four lines each."""
    lines = shakespeare_lines()
    return ["\n".join(lines[4 * i : 4 * i + 4]) for i in range(count)]


def write_files(folder: Path, texts: list[str]) -> Path:
    folder.mkdir()
    for index, text in enumerate(texts):
        (folder / f"{index:04d}.txt").write_text(text, encoding="utf-8")
    return folder


def split_texts(prepared: PreparedData) -> tuple[str, str]:
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    train, val = (open_tokens(p, prepared.dtype) for p in (prepared.train_path, prepared.val_path))
    return tokenizer.decode(train), tokenizer.decode(val)


LAYOUTS = {
    "few big files": big_files,  # the first went to validation whole: 40%
    "one big file": lambda: ["".join(big_files())],
    "many small files": lambda: stories(400),
    "many separated documents": lambda: ["\n<|endoftext|>\n".join(stories(400))],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_validation_share_is_close_to_val_fraction(
    layout: str, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
):
    folder = write_files(tmp_path / "corpus", LAYOUTS[layout]())
    with caplog.at_level("INFO", logger="tinygpt.data.prepare"):
        prepared = prepare_dataset(DataConfig(source=str(folder), workers=1))
    share = prepared.val_tokens / (prepared.train_tokens + prepared.val_tokens)
    assert 0.085 < share < 0.115, share  # the three big files gave 0.40
    assert f"({100 * share:.1f}% validation" in caplog.text
    assert "WARNING" not in [record.levelname for record in caplog.records]


def test_each_big_file_without_separators_gives_its_end_to_validation(
    tmp_path: Path, cache_dir: Path
):
    texts = big_files()
    folder = write_files(tmp_path / "corpus", texts)
    train, val = split_texts(prepare_dataset(DataConfig(source=str(folder), workers=1)))
    separator = "\n\n"  # the char tokenizer's, after each part; the texts have no blank line
    ends = val.split(separator)[:-1]
    # each file's last ~10% validates, from the start of a line, and the rest trains
    assert len(ends) == len(texts)
    pairs = list(zip(texts, ends, strict=True))
    assert all(text.endswith("\n" + end) for text, end in pairs)
    assert all(0.08 < len(end) / len(text) < 0.12 for text, end in pairs)
    assert train == "".join(text[: -len(end)] + separator for text, end in pairs)


def test_small_files_without_separators_stay_whole(tmp_path: Path, cache_dir: Path):
    texts = stories(400)  # a folder of one story per file: none is cut through
    folder = write_files(tmp_path / "corpus", texts)
    train, val = split_texts(prepare_dataset(DataConfig(source=str(folder), workers=1)))
    held_out = [text for index, text in enumerate(texts) if is_validation(index, 0.1)]
    assert 30 <= len(held_out) <= 50  # about val_fraction of the 400 files
    assert val == "".join(text + "\n\n" for text in held_out)
    assert train.count("\n\n") == len(texts) - len(held_out)


def test_a_split_far_from_val_fraction_is_warned(
    tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
):
    # three separated documents: the first, 60% of the text, goes to validation whole
    text = "\n".join(shakespeare_lines())
    documents = [text[:6_000], text[6_000:8_000], text[8_000:10_000]]
    path = tmp_path / "three.txt"
    path.write_text("\n<|endoftext|>\n".join(documents), encoding="utf-8")
    with caplog.at_level("INFO", logger="tinygpt.data.prepare"):
        prepared = prepare_dataset(DataConfig(source=str(path), workers=1))
    assert prepared.val_tokens > prepared.train_tokens
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "validation holds 60.0% of the tokens though val_fraction=0.1" in warnings[0]


def test_bpe_ids_of_a_document_in_pieces_are_those_of_the_whole_text(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(splitting, "SHARD_TEXT_BYTES", 40)  # about 20 pieces
    # " \n" is a learned token here (from " \n\n"): a piece cut after "sat \n" would end in it,
    # where the whole text has " " then "\n", so pieces may only end in a newline after a word
    text = "".join(("the cat sat \n", "a hat\n", "the hat \n\n")[i % 3] for i in range(100))
    path = tmp_path / "hats.txt"
    path.write_text(text, encoding="utf-8")
    config = DataConfig(source=str(path), tokenizer="bpe", tokenizer_vocab_size=300, workers=1)
    prepared = prepare_dataset(config)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    ids = [open_tokens(p, prepared.dtype) for p in (prepared.train_path, prepared.val_path)]
    assert np.concatenate(ids).tolist() == tokenizer.encode(text)


def pieces_of(text: str, size: int) -> list[str]:
    """The pieces `prepare` cuts `text` into when a piece holds about `size` bytes (hypothesis
    runs many examples per test, so the module constant is set by hand, not by monkeypatch)."""
    original = splitting.SHARD_TEXT_BYTES
    splitting.SHARD_TEXT_BYTES = size
    try:
        return list(splitting.pieces(text))
    finally:
        splitting.SHARD_TEXT_BYTES = original


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab \n", max_size=300), st.integers(min_value=1, max_value=40))
def test_pieces_rejoin_to_the_text_and_cut_only_before_a_new_word(text, size):
    pieces = pieces_of(text, size)
    assert "".join(pieces) == text
    for piece, following in itertools.pairwise(pieces):
        assert len(piece) >= size and piece.endswith("\n")
        assert not piece[-2].isspace() and not following[0].isspace()  # "\n" between two words


@functools.cache
def whitespace_bpe() -> BPETokenizer:
    """A BPE that has learned merges of spaces and newlines, such as " \n"."""
    return BPETokenizer.train(["a \n\nb  \n\n ab\nba \nab \n\n" * 50], 300)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab \n", max_size=300), st.integers(min_value=1, max_value=40))
def test_pieces_encode_to_the_bpe_ids_of_the_whole_text(text, size):
    pieces = pieces_of(text, size)
    tokenizer = whitespace_bpe()
    assert [i for piece in pieces for i in tokenizer.encode(piece)] == tokenizer.encode(text)
