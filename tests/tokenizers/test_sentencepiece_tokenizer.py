"""SentencePiece BPE with byte fallback (the dialog-chatbot spec's tokenizer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import strategies as st

from tinygpt.errors import CheckpointError, DataError
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.tokenizers.sentencepiece_bpe import SPECIAL_TOKENS, SentencePieceTokenizer

CHARACTERS = st.sampled_from(list("ab \n\t.é😀\u2581")) | st.characters(codec="utf-8")
CHUNKY_TEXT = st.text(CHARACTERS, max_size=80)


def test_trains_the_requested_vocabulary_with_fixed_special_ids(spiece: SentencePieceTokenizer):
    assert spiece.vocab_size == 500
    assert spiece.special_tokens == {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "<sep>": 4}
    assert spiece.eot_id == SPECIAL_TOKENS["</s>"] == 3
    assert spiece.document_separator() == [3]


@pytest.mark.parametrize(
    "text",
    ["  lead", "trail  ", "a\r\nb", "tab\there", "many     spaces", "😀🫖", "\u2581 x\u2581", ""],
)
def test_whitespace_and_emoji_round_trip(spiece: SentencePieceTokenizer, text: str):
    assert spiece.decode(spiece.encode(text)) == text


def test_special_ids_decode_to_their_names(spiece: SentencePieceTokenizer):
    ids = [2, *spiece.encode(" User: hi "), 4, *spiece.encode(" Bot: yo "), 3]
    assert spiece.decode(ids) == "<s> User: hi <sep> Bot: yo </s>"


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
