"""Byte-level BPE trained with Hugging Face tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import strategies as st

from tinygpt.errors import CheckpointError
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.tokenizers.bpe import SPECIAL_TOKENS, BPETokenizer

# newlines and spaces next to each other, where chunking could go wrong
CHARACTERS = st.sampled_from(list("ab \n\t.é😀")) | st.characters(codec="utf-8")
CHUNKY_TEXT = st.text(CHARACTERS, max_size=80)


def test_trains_the_requested_vocabulary(bpe: BPETokenizer):
    assert bpe.vocab_size == 500
    assert list(bpe.special_tokens) == list(SPECIAL_TOKENS)
    assert bpe.special_tokens["<|endoftext|>"] == bpe.eot_id
    assert bpe.document_separator() == [bpe.eot_id]


def test_special_ids_decode_to_their_names(bpe: BPETokenizer):
    ids = [*bpe.encode("hi"), bpe.eot_id, bpe.special_tokens["<sep>"], *bpe.encode(" there")]
    assert bpe.decode(ids) == "hi<|endoftext|><sep> there"


def test_malformed_file_is_a_checkpoint_error(tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"kind": "bpe", "hf_tokenizer": {"model": 3}}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="malformed"):
        load_tokenizer(path)
