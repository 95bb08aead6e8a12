"""build_tokenizer: the config picks the kind, and trainers stream the documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tinygpt.config import DataConfig
from tinygpt.errors import DataError
from tinygpt.tokenizers.base import build_tokenizer, tokenizer_classes
from tinygpt.tokenizers.bpe import BPETokenizer
from tinygpt.tokenizers.char import CharTokenizer
from tinygpt.tokenizers.sentencepiece_bpe import SentencePieceTokenizer
from tinygpt.tokenizers.tiktoken_gpt2 import GPT2Tokenizer


class OneShotDocuments:
    """A corpus that can only be streamed: each call gives a generator and is counted."""

    def __init__(self, documents: list[str]) -> None:
        self.documents = documents
        self.calls = 0

    def __call__(self) -> Iterator[str]:
        self.calls += 1
        yield from self.documents


def test_every_kind_is_registered():
    assert set(tokenizer_classes()) == {"char", "bpe", "sentencepiece", "gpt2"}


def test_char_vocabulary_is_the_union_of_all_documents():
    documents = OneShotDocuments(["ba", "ca\n"])
    tokenizer = build_tokenizer(DataConfig(unknown_chars="unk"), documents)
    assert isinstance(tokenizer, CharTokenizer)
    assert tokenizer.chars == ("\n", "a", "b", "c")
    assert tokenizer.unk_id == 4
    assert documents.calls == 1


def test_char_on_no_text_is_a_data_error():
    with pytest.raises(DataError, match="empty text"):
        build_tokenizer(DataConfig(), OneShotDocuments(["", ""]))


def test_bpe_trains_from_a_generator(training_documents: list[str]):
    documents = OneShotDocuments(training_documents)
    tokenizer = build_tokenizer(DataConfig(tokenizer="bpe", tokenizer_vocab_size=400), documents)
    assert isinstance(tokenizer, BPETokenizer)
    assert tokenizer.vocab_size == 400
    assert documents.calls == 1


def test_sentencepiece_trains_from_a_generator(training_documents: list[str]):
    documents = OneShotDocuments(training_documents)
    config = DataConfig(tokenizer="sentencepiece", tokenizer_vocab_size=400)
    tokenizer = build_tokenizer(config, documents)
    assert isinstance(tokenizer, SentencePieceTokenizer)
    assert tokenizer.vocab_size == 400
    assert documents.calls == 1


def test_gpt2_is_pretrained_and_reads_no_documents(shared_data: Path):
    documents = OneShotDocuments(["never read"])
    config = DataConfig(tokenizer="gpt2", gpt2_bpe_dir=str(shared_data / "gpt2_bpe"))
    tokenizer = build_tokenizer(config, documents)
    assert isinstance(tokenizer, GPT2Tokenizer)
    assert documents.calls == 0
