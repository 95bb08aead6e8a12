"""The final token files: the split, their dtype, the validation text's size (token_files.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_helpers import TEXT

from tinygpt.config import DataConfig
from tinygpt.data.memmap import open_tokens
from tinygpt.data.prepare import (
    PreparedData,
    is_validation,
    load_prepared,
    prepare_dataset,
    splitting,
)
from tinygpt.errors import DataError
from tinygpt.tokenizers.base import load_tokenizer


def test_split_is_contiguous_ninety_ten_in_uint16(corpus: Path, cache_dir: Path):
    prepared = prepare_dataset(DataConfig(source=str(corpus)))
    assert prepared.directory.parent == cache_dir / "prepared"
    assert prepared.dtype == "uint16"
    assert prepared.train_tokens == int(len(TEXT) * 0.9) == 999
    assert prepared.val_tokens == len(TEXT) - 999
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    assert tokenizer.vocab_size == prepared.vocab_size == len(set(TEXT))
    train = open_tokens(prepared.train_path, prepared.dtype)
    val = open_tokens(prepared.val_path, prepared.dtype)
    assert tokenizer.decode(train) + tokenizer.decode(val) == TEXT
    assert prepared.train_path.stat().st_size == 2 * prepared.train_tokens


def test_too_little_text_for_two_splits_raises(tmp_path: Path, cache_dir: Path):
    path = tmp_path / "tiny.txt"
    path.write_text("abcdefghi", encoding="utf-8")  # 8 train, 1 val
    with pytest.raises(DataError, match="each split needs at least 2"):
        prepare_dataset(DataConfig(source=str(path)))


def test_large_vocabularies_use_uint32(tmp_path: Path, cache_dir: Path):
    text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 70_000) if not 0xD800 <= c < 0xE000)
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(path)))
    assert prepared.dtype == "uint32"
    tokens = np.concatenate(
        [open_tokens(p, "uint32") for p in (prepared.train_path, prepared.val_path)]
    )
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    assert tokenizer.vocab_size == len(text) + 1  # + "\n", the document separator
    assert tokens.tolist() == list(range(1, len(text) + 1))


def test_val_chars_and_bytes_of_a_document_cut_by_position(tmp_path: Path, cache_dir: Path):
    text = "héllo wörld, a snowman ☃ and a 𝄞 clef.\n" * 40
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(path), workers=1))
    val_text = text[prepared.train_tokens :]  # one character per token
    assert prepared.val_chars == prepared.val_tokens == len(val_text)
    assert prepared.val_bytes == len(val_text.encode("utf-8"))
    assert load_prepared(prepared.directory) == prepared


def prepare_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, PreparedData]:
    """160 lines of non-ASCII text prepared in about 12 pieces; the text and the result."""
    monkeypatch.setattr(splitting, "SHARD_TEXT_BYTES", 300)
    text = "".join(f"line {i}: naïve café ☃\n" for i in range(160))
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    return text, prepare_dataset(DataConfig(source=str(path), workers=1))


def test_a_document_encoded_in_pieces_has_no_separator_inside(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    text, prepared = prepare_in_pieces(tmp_path, monkeypatch)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    train = tokenizer.decode(open_tokens(prepared.train_path, prepared.dtype))
    val = tokenizer.decode(open_tokens(prepared.val_path, prepared.dtype))
    assert train + val == text  # no "\n\n" separator after each piece
    assert prepared.train_tokens == int(len(text) * 0.9)
    assert prepared.val_tokens == len(text) - prepared.train_tokens


def test_val_chars_when_the_cut_falls_inside_one_of_several_pieces(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    text, prepared = prepare_in_pieces(tmp_path, monkeypatch)
    val_text = text[prepared.train_tokens :]  # one character per token
    assert prepared.val_chars == prepared.val_tokens == len(val_text)
    assert prepared.val_bytes == len(val_text.encode("utf-8"))


def test_val_chars_count_the_validation_documents(tmp_path: Path, cache_dir: Path):
    documents = [f"story {i}: ça va" + " ü" * i for i in range(40)]  # nothing to strip
    path = tmp_path / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(documents) + "\n", encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(path), workers=1))
    held_out = [doc for i, doc in enumerate(documents) if is_validation(i, 0.1)]
    assert held_out
    assert prepared.val_chars == sum(map(len, held_out))
    assert prepared.val_bytes == sum(len(doc.encode("utf-8")) for doc in held_out)
