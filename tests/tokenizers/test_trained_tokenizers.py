"""What both trained tokenizers (byte-level BPE and SentencePiece) must do: round trips, special
tokens only by id, identical encodings after save/load, chunked and batched encoding equal to
encoding the whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.errors import DataError
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer
from tinygpt.tokenizers.bpe import encode_in_chunks, split_text

# newlines and spaces next to each other, and SentencePiece's own space mark, where chunking
# could go wrong
CHARACTERS = st.sampled_from(list("ab \n\t.é😀\u2581")) | st.characters(codec="utf-8")
CHUNKY_TEXT = st.text(CHARACTERS, max_size=80)


@pytest.fixture(scope="module", params=["bpe", "spiece"])
def trained(request: pytest.FixtureRequest) -> Tokenizer:
    return request.getfixturevalue(request.param)


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_any_text_round_trips(trained: Tokenizer, text: str):
    ids = trained.encode(text)
    assert all(0 <= i < trained.vocab_size for i in ids)
    assert trained.decode(ids) == text


def test_special_token_text_never_gives_special_ids(trained: Tokenizer):
    text = "The end." + "\n".join(trained.special_tokens) + " <s> User: hi <sep> Bot: yo </s>"
    special = set(trained.special_tokens.values())
    ids = trained.encode(text)
    assert not set(ids) & special
    assert trained.decode(ids) == text
    assert not set(trained.encode_batch([text])[0]) & special


def test_save_and_load_give_identical_encodings(trained: Tokenizer, tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    trained.save(path)
    loaded = load_tokenizer(path)
    assert type(loaded) is type(trained)
    text = "Once upon a time, Lily's dog 😀 found\ta ball <|endoftext|>.\n\n  x\u2581y"
    assert loaded.encode(text) == trained.encode(text)
    assert loaded.special_tokens == trained.special_tokens
    assert loaded.to_dict() == trained.to_dict()


@settings(max_examples=200, deadline=None)
@given(text=CHUNKY_TEXT, chunk_chars=st.integers(1, 8))
def test_chunked_encoding_equals_whole_encoding(trained: Tokenizer, text: str, chunk_chars: int):
    assert "".join(split_text(text, chunk_chars)) == text
    chunked = encode_in_chunks(trained.encode_batch, text, chunk_chars)
    assert chunked.dtype == np.int64
    assert chunked.tolist() == trained.encode(text)


def test_encode_batch_and_array_match_encode(trained: Tokenizer, training_documents: list[str]):
    texts = [*training_documents[:20], "x\u2581y"]
    assert trained.encode_batch(texts) == [trained.encode(text) for text in texts]
    whole = "\n".join(texts)
    assert trained.encode_array(whole).tolist() == trained.encode(whole)


def test_decode_rejects_ids_outside_the_vocabulary(trained: Tokenizer):
    assert trained.decode(np.array(trained.encode("hi"))) == "hi"
    with pytest.raises(DataError, match=r"token ids must be in 0\.\.499"):
        trained.decode([500])
