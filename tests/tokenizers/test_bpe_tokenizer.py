"""Byte-level BPE trained with Hugging Face tokenizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.errors import CheckpointError, DataError
from tinygpt.tokenizers.base import StreamDecoder, load_tokenizer
from tinygpt.tokenizers.bpe import SPECIAL_TOKENS, BPETokenizer, encode_in_chunks, split_text

# newlines and spaces next to each other, where chunking could go wrong
CHARACTERS = st.sampled_from(list("ab \n\t.é😀")) | st.characters(codec="utf-8")
CHUNKY_TEXT = st.text(CHARACTERS, max_size=80)


@pytest.fixture(scope="module")
def bpe(training_documents: list[str]) -> BPETokenizer:
    return BPETokenizer.train(iter(training_documents), vocab_size=500)


def test_trains_the_requested_vocabulary(bpe: BPETokenizer):
    assert bpe.vocab_size == 500
    assert list(bpe.special_tokens) == list(SPECIAL_TOKENS)
    assert bpe.special_tokens["<|endoftext|>"] == bpe.eot_id
    assert bpe.document_separator() == [bpe.eot_id]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_round_trips(bpe: BPETokenizer, text: str):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


def test_special_token_text_never_gives_special_ids(bpe: BPETokenizer):
    text = "The end.<|endoftext|>\n<s> User: hi <sep> Bot: yo </s><pad><unk>"
    ids = bpe.encode(text)
    assert not set(ids) & set(bpe.special_tokens.values())
    assert bpe.decode(ids) == text
    assert not set(bpe.encode_batch([text])[0]) & set(bpe.special_tokens.values())


def test_special_ids_decode_to_their_names(bpe: BPETokenizer):
    ids = [*bpe.encode("hi"), bpe.eot_id, bpe.special_tokens["<sep>"], *bpe.encode(" there")]
    assert bpe.decode(ids) == "hi<|endoftext|><sep> there"


def test_save_and_load_give_identical_encodings(bpe: BPETokenizer, tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer)
    text = "Once upon a time, Lily's dog 😀 found <|endoftext|> a ball.\n\n"
    assert loaded.encode(text) == bpe.encode(text)
    assert loaded.special_tokens == bpe.special_tokens
    assert loaded.to_dict() == bpe.to_dict()


def test_malformed_file_is_a_checkpoint_error(tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"kind": "bpe", "hf_tokenizer": {"model": 3}}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="malformed"):
        load_tokenizer(path)


@settings(max_examples=200, deadline=None)
@given(CHUNKY_TEXT, st.integers(1, 8))
def test_chunked_encoding_equals_whole_encoding(bpe: BPETokenizer, text: str, chunk_chars: int):
    assert "".join(split_text(text, chunk_chars)) == text
    chunked = encode_in_chunks(bpe.encode_batch, text, chunk_chars)
    assert chunked.dtype == np.int64
    assert chunked.tolist() == bpe.encode(text)


def test_encode_batch_and_array_match_encode(bpe: BPETokenizer, training_documents: list[str]):
    texts = training_documents[:20]
    assert bpe.encode_batch(texts) == [bpe.encode(text) for text in texts]
    whole = "\n".join(texts)
    assert bpe.encode_array(whole).tolist() == bpe.encode(whole)


def test_stream_decoder_never_splits_a_character(bpe: BPETokenizer):
    text = "Tea 🫖 and 😀🚀, naïve 日本語 ❤️!"
    decoder = StreamDecoder(bpe)
    pieces = [decoder.push(i) for i in bpe.encode(text)] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_stream_decoder_pieces_join_to_the_text(bpe: BPETokenizer, text: str):
    decoder = StreamDecoder(bpe)
    pieces = [decoder.push(i) for i in bpe.encode(text)] + [decoder.flush()]
    assert "".join(pieces) == text


def test_decode_rejects_ids_outside_the_vocabulary(bpe: BPETokenizer):
    assert bpe.decode(np.array(bpe.encode("hi"))) == "hi"
    with pytest.raises(DataError, match=r"token ids must be in 0\.\.499"):
        bpe.decode([500])
