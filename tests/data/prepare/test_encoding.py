"""Shards encoded in worker processes, resumable, with dialog loss masks (prepare/encoding.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tqdm import tqdm

from tinygpt.config import DataConfig
from tinygpt.data.memmap import BatchSampler, open_loss_mask, open_tokens
from tinygpt.data.prepare import encoding, prepare_dataset, splitting
from tinygpt.model.loss import IGNORE_INDEX
from tinygpt.tokenizers.base import load_tokenizer


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_shards_give_the_same_files(stories_file, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(splitting, "SHARD_TEXT_BYTES", 500)  # many shards
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
    monkeypatch.setattr(splitting, "SHARD_TEXT_BYTES", 500)
    config = DataConfig(source=str(stories_file), workers=1)
    real_encode = encoding._encode_batch
    calls = []

    def interrupted_after_three(batch):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(len(batch))
        return real_encode(batch)

    monkeypatch.setattr(encoding, "_encode_batch", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(config, cache_dir=tmp_path / "c", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing that looks complete
    finished = len(list((tmp_path / ".out.work").glob("*.done")))
    assert finished >= 2
    calls.clear()
    monkeypatch.setattr(encoding, "_encode_batch", lambda b: calls.append(len(b)) or real_encode(b))
    resumed = prepare_dataset(config, cache_dir=tmp_path / "c", out_dir=tmp_path / "out")
    resumed_calls = len(calls)
    calls.clear()
    fresh = prepare_dataset(config, cache_dir=tmp_path / "fresh")
    assert resumed_calls == len(calls) - finished  # finished shards are not encoded again
    assert resumed.train_path.read_bytes() == fresh.train_path.read_bytes()


def test_dialog_data_has_a_loss_mask_on_bot_turns_only(dialog_fixtures: Path, tmp_path: Path):
    source = dialog_fixtures / "dailydialog"
    config = DataConfig(source=str(source), format="dialog", max_documents=200)
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


class RecordedBar(tqdm):
    """The prepare bar, shown even without a terminal, its last position kept."""

    last: RecordedBar | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})
        RecordedBar.last = self


def test_the_prepare_bar_ends_at_100_percent(tmp_path, monkeypatch):
    """The total is the source's bytes, separators and accents included; the bar used to count
    characters of the documents alone, and stopped short (98% on TinyStories)."""
    stories = ["Once upon a time, a café.", "The end — naïve über straße.", "日本語 story."] * 30
    source = tmp_path / "stories.txt"
    source.write_text("\n<|endoftext|>\n".join(stories) + "\n", encoding="utf-8")
    monkeypatch.setattr(encoding, "tqdm", RecordedBar)
    config = DataConfig(source=str(source), workers=1, val_fraction=0.2)
    prepare_dataset(config, out_dir=tmp_path / "prepared")
    bar = RecordedBar.last
    assert bar is not None and bar.total == source.stat().st_size
    assert bar.n == bar.total
