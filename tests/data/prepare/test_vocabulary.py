"""The tokenizer prepared data is encoded with: trained, or given (prepare/vocabulary.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_helpers import TEXT

from tinygpt.config import DataConfig
from tinygpt.data.memmap import open_tokens
from tinygpt.data.prepare import dataset_key, pipeline, prepare_dataset
from tinygpt.errors import DataError
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.tokenizers.char import CharTokenizer


def test_a_given_tokenizer_is_used_and_keys_the_cache(corpus: Path, cache_dir: Path):
    given = CharTokenizer.train(TEXT + "!#")  # wider than the corpus would train: other ids
    config = DataConfig(source=str(corpus), workers=1)
    prepared = prepare_dataset(config, tokenizer=given)
    default = prepare_dataset(config)
    assert prepared.directory != default.directory
    assert prepared.directory.name == dataset_key(prepared.source_sha256, config, given)
    assert prepared.directory.name != dataset_key(prepared.source_sha256, config)
    ids = np.concatenate(
        [open_tokens(prepared.train_path, prepared.dtype), open_tokens(prepared.val_path, "uint16")]
    )
    assert ids.tolist() == given.encode(TEXT)
    assert prepared.vocab_size == given.vocab_size
    assert load_tokenizer(prepared.tokenizer_path).to_dict() == given.to_dict()
    # the default vocabulary's ids differ, so the two must never share files
    assert load_tokenizer(default.tokenizer_path).encode(TEXT) != given.encode(TEXT)


def test_a_given_tokenizer_equal_to_the_trained_one_reuses_its_data(
    corpus: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    config = DataConfig(source=str(corpus), workers=1)
    default = prepare_dataset(config)
    trained = load_tokenizer(default.tokenizer_path)

    def fail(*args: object) -> None:
        raise AssertionError("the data was tokenized again")

    monkeypatch.setattr(pipeline, "encode_corpus", fail)
    assert prepare_dataset(config, tokenizer=trained) == default


def test_characters_a_given_tokenizer_cannot_encode_are_one_line(corpus: Path, cache_dir: Path):
    given = CharTokenizer.train("hello")
    with pytest.raises(DataError, match="outside the 4-character vocabulary") as caught:
        prepare_dataset(DataConfig(source=str(corpus), workers=1), tokenizer=given)
    assert "' '" in str(caught.value) and len(str(caught.value).splitlines()) == 1
