"""SentencePiece BPE with byte fallback (seed 002's tokenizer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.errors import CheckpointError, DataError
from tinygpt.tokenizers.base import StreamDecoder, load_tokenizer
from tinygpt.tokenizers.bpe import encode_in_chunks
from tinygpt.tokenizers.sentencepiece_bpe import SPECIAL_TOKENS, SentencePieceTokenizer

CHARACTERS = st.sampled_from(list("ab \n\t.é😀\u2581")) | st.characters(codec="utf-8")
CHUNKY_TEXT = st.text(CHARACTERS, max_size=80)


@pytest.fixture(scope="module")
def spiece(training_documents: list[str]) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(iter(training_documents), vocab_size=500)


def test_trains_the_requested_vocabulary_with_fixed_special_ids(spiece: SentencePieceTokenizer):
    assert spiece.vocab_size == 500
    assert spiece.special_tokens == {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "<sep>": 4}
    assert spiece.eot_id == SPECIAL_TOKENS["</s>"] == 3
    assert spiece.document_separator() == [3]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_round_trips(spiece: SentencePieceTokenizer, text: str):
    ids = spiece.encode(text)
    assert all(0 <= i < spiece.vocab_size for i in ids)
    assert spiece.decode(ids) == text


@pytest.mark.parametrize(
    "text",
    ["  lead", "trail  ", "a\r\nb", "tab\there", "many     spaces", "😀🫖", "\u2581 x\u2581", ""],
)
def test_whitespace_and_emoji_round_trip(spiece: SentencePieceTokenizer, text: str):
    assert spiece.decode(spiece.encode(text)) == text


def test_dialog_markers_in_text_never_give_special_ids(spiece: SentencePieceTokenizer):
    text = "<s> User: Hello! <sep> Bot: Hi there. </s><pad><unk>"
    ids = spiece.encode(text)
    assert not set(ids) & set(SPECIAL_TOKENS.values())
    assert spiece.decode(ids) == text
    assert not set(spiece.encode_batch([text])[0]) & set(SPECIAL_TOKENS.values())


def test_special_ids_decode_to_their_names(spiece: SentencePieceTokenizer):
    ids = [2, *spiece.encode(" User: hi "), 4, *spiece.encode(" Bot: yo "), 3]
    assert spiece.decode(ids) == "<s> User: hi <sep> Bot: yo </s>"


def test_save_and_load_give_identical_encodings(spiece: SentencePieceTokenizer, tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    spiece.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, SentencePieceTokenizer)
    text = "Once upon a time, Lily's dog 😀 found\ta ball.\n\n  x\u2581y"
    assert loaded.encode(text) == spiece.encode(text)
    assert loaded.to_dict() == spiece.to_dict()


def test_malformed_model_is_a_checkpoint_error(tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"kind": "sentencepiece", "model": "bm90IGEgbW9kZWw="}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="malformed"):
        load_tokenizer(path)


def test_too_big_a_vocabulary_for_the_text_is_a_data_error():
    with pytest.raises(DataError, match=r"could only make \d+ pieces.*tokenizer_vocab_size"):
        SentencePieceTokenizer.train(["The cat sat on the mat.\nThe dog sat too."], 5000)


def test_empty_text_is_a_data_error():
    with pytest.raises(DataError, match="no text"):
        SentencePieceTokenizer.train(["", "\n\n"], 500)


def test_an_error_while_reading_documents_comes_through():
    def documents() -> Iterator[str]:
        yield "Some text.\n" * 100
        raise DataError("books/b.txt is not UTF-8")

    with pytest.raises(DataError, match="not UTF-8"):
        SentencePieceTokenizer.train(documents(), 500)


@settings(max_examples=200, deadline=None)
@given(CHUNKY_TEXT, st.integers(1, 8))
def test_chunked_encoding_equals_whole_encoding(
    spiece: SentencePieceTokenizer, text: str, chunk_chars: int
):
    chunked = encode_in_chunks(spiece.encode_batch, text, chunk_chars)
    assert chunked.tolist() == spiece.encode(text)


def test_encode_batch_and_array_match_encode(
    spiece: SentencePieceTokenizer, training_documents: list[str]
):
    texts = [*training_documents[:20], "x\u2581y"]
    assert spiece.encode_batch(texts) == [spiece.encode(text) for text in texts]
    whole = "\n".join(texts)
    assert spiece.encode_array(whole).tolist() == spiece.encode(whole)


def test_stream_decoder_never_splits_a_character(spiece: SentencePieceTokenizer):
    text = "Tea 🫖 and 😀🚀, naïve 日本語 ❤️ ẞ!"  # 🫖 and ẞ are not in the vocabulary: bytes
    decoder = StreamDecoder(spiece)
    pieces = [decoder.push(i) for i in spiece.encode(text)] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
