"""Preparation of document corpora: splits by document, parallel shards, resume, dialog masks."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygpt.data.prepare as prepare
from tinygpt.config import DataConfig
from tinygpt.data.memmap import BatchSampler, open_loss_mask, open_tokens
from tinygpt.data.prepare import prepare_dataset
from tinygpt.errors import DataError
from tinygpt.model.loss import IGNORE_INDEX
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.tokenizers.bpe import BPETokenizer

STORIES = [f"Story {i}: once upon a time a cat named Tom{i} found a hat." for i in range(200)]


@pytest.fixture
def stories_file(tmp_path: Path) -> Path:
    path = tmp_path / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(STORIES) + "\n<|endoftext|>\n", encoding="utf-8")
    return path


def decoded_documents(prepared, split: str) -> list[str]:
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    path = prepared.train_path if split == "train" else prepared.val_path
    text = tokenizer.decode(open_tokens(path, prepared.dtype).tolist())
    return [doc for doc in text.split("\n\n") if doc]


def test_documents_are_split_whole_and_never_cut(stories_file: Path, tmp_path: Path):
    prepared = prepare_dataset(DataConfig(source=str(stories_file)), cache_dir=tmp_path / "c")
    train, val = decoded_documents(prepared, "train"), decoded_documents(prepared, "val")
    assert sorted(train + val) == sorted(STORIES)
    assert not set(train) & set(val)
    assert len(val) == pytest.approx(20, abs=2)  # val_fraction 0.1 of 200 documents


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_shards_give_the_same_files(stories_file, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(prepare, "SHARD_TEXT_BYTES", 500)  # many shards
    config = DataConfig(source=str(stories_file), workers=workers)
    prepared = prepare_dataset(config, cache_dir=tmp_path / "c", out_dir=tmp_path / f"w{workers}")
    single = prepare_dataset(
        DataConfig(source=str(stories_file), workers=1), cache_dir=tmp_path / "c1"
    )
    assert prepared.train_path.read_bytes() == single.train_path.read_bytes()
    assert prepared.val_path.read_bytes() == single.val_path.read_bytes()


def test_an_interrupted_preparation_resumes_without_redoing_finished_shards(
    stories_file, tmp_path, monkeypatch
):
    monkeypatch.setattr(prepare, "SHARD_TEXT_BYTES", 500)
    config = DataConfig(source=str(stories_file), workers=1)
    real_encode = prepare._encode_batch
    calls = []

    def interrupted_after_three(batch):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(len(batch))
        return real_encode(batch)

    monkeypatch.setattr(prepare, "_encode_batch", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(config, cache_dir=tmp_path / "c", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing that looks complete
    finished = len(list((tmp_path / ".out.work").glob("*.done")))
    assert finished >= 2
    calls.clear()
    monkeypatch.setattr(prepare, "_encode_batch", lambda b: calls.append(len(b)) or real_encode(b))
    resumed = prepare_dataset(config, cache_dir=tmp_path / "c", out_dir=tmp_path / "out")
    resumed_calls = len(calls)
    calls.clear()
    fresh = prepare_dataset(config, cache_dir=tmp_path / "fresh")
    assert resumed_calls == len(calls) - finished  # finished shards are not encoded again
    assert resumed.train_path.read_bytes() == fresh.train_path.read_bytes()


def test_a_prepared_directory_can_be_the_data_source(stories_file, tmp_path):
    prepared = prepare_dataset(DataConfig(source=str(stories_file)), out_dir=tmp_path / "p")
    again = prepare_dataset(DataConfig(source=str(tmp_path / "p")))
    assert again == prepared
    with pytest.raises(DataError, match="prepared with the char tokenizer"):
        prepare_dataset(DataConfig(source=str(tmp_path / "p"), tokenizer="gpt2"))


def test_dialog_data_has_a_loss_mask_on_bot_turns_only(shared_data: Path, tmp_path: Path):
    config = DataConfig(source=str(shared_data / "dailydialog"), format="dialog", max_documents=200)
    prepared = prepare_dataset(config, cache_dir=tmp_path / "c")
    assert prepared.has_loss_mask
    tokens = open_tokens(prepared.train_path, prepared.dtype)
    mask = open_loss_mask(prepared.mask_path("train"))
    assert len(mask) == len(tokens) and 0.2 < mask.mean() < 0.8
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    learned = tokenizer.decode(tokens[mask == 1][:400].tolist())
    assert "User:" not in learned
    sampler = BatchSampler(tokens, 64, 8, seed=0, loss_mask=mask)
    _, y = sampler.next_batch()
    assert (y == IGNORE_INDEX).any() and (y != IGNORE_INDEX).any()


def test_an_empty_corpus_is_refused(tmp_path: Path):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"text": ""}\n', encoding="utf-8")
    with pytest.raises(DataError):
        prepare_dataset(DataConfig(source=str(path)), cache_dir=tmp_path / "c")


def pieces_of(text: str, size: int) -> list[str]:
    """The pieces `prepare` cuts `text` into when a piece holds about `size` bytes (hypothesis
    runs many examples per test, so the module constant is set by hand, not by monkeypatch)."""
    original = prepare.SHARD_TEXT_BYTES
    prepare.SHARD_TEXT_BYTES = size
    try:
        return list(prepare._pieces(text))
    finally:
        prepare.SHARD_TEXT_BYTES = original


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
