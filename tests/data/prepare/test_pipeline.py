"""`prepare_dataset`: the cache entry, reused, replaced, resumed (prepare/pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_helpers import TEXT

from tinygpt.config import DataConfig
from tinygpt.data.memmap import open_tokens
from tinygpt.data.prepare import prepare_dataset, token_files, vocabulary
from tinygpt.errors import DataError
from tinygpt.tokenizers.base import load_tokenizer


def test_second_call_reuses_the_files_without_tokenizing(
    corpus: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    first = prepare_dataset(DataConfig(source=str(corpus)))

    def fail(*args: object) -> None:
        raise AssertionError("the data was tokenized again")

    monkeypatch.setattr(vocabulary, "build_tokenizer", fail)
    assert prepare_dataset(DataConfig(source=str(corpus))) == first


def test_a_changed_source_is_prepared_again(corpus: Path, cache_dir: Path):
    first = prepare_dataset(DataConfig(source=str(corpus)))
    corpus.write_text(TEXT + "more text!\n", encoding="utf-8")
    second = prepare_dataset(DataConfig(source=str(corpus)))
    assert second.directory != first.directory
    assert second.source_sha256 != first.source_sha256
    assert second.train_tokens + second.val_tokens == len(TEXT) + 11


def test_a_different_val_fraction_is_prepared_separately(corpus: Path, cache_dir: Path):
    first = prepare_dataset(DataConfig(source=str(corpus)))
    second = prepare_dataset(DataConfig(source=str(corpus), val_fraction=0.2))
    assert second.directory != first.directory
    assert second.val_tokens == len(TEXT) - int(len(TEXT) * 0.8)


def test_an_interrupted_write_leaves_no_complete_looking_directory(
    corpus: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(token_files, "cut_by_position", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(DataConfig(source=str(corpus)))
    visible = [p for p in (cache_dir / "prepared").iterdir() if not p.name.startswith(".")]
    assert visible == []  # only the hidden work directory a resumed run continues from
    monkeypatch.undo()
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(cache_dir))
    prepared = prepare_dataset(DataConfig(source=str(corpus)))
    assert prepared.train_tokens == 999


def test_a_damaged_directory_is_replaced(corpus: Path, cache_dir: Path):
    first = prepare_dataset(DataConfig(source=str(corpus)))
    first.train_path.write_bytes(b"\x00\x00")  # truncated: sizes no longer match meta.json
    second = prepare_dataset(DataConfig(source=str(corpus)))
    assert second == first
    assert first.train_path.stat().st_size == 2 * first.train_tokens


def test_a_work_directory_left_by_other_data_is_not_resumed(tmp_path: Path, cache_dir: Path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    work = tmp_path / ".out.work"  # e.g. from an older version, or another corpus
    work.mkdir()
    (work / "train-000000.all.bin").write_bytes(b"\x00\x00" * 7)
    (work / "train-000000.done").write_text('["all"]', encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(path), workers=1), out_dir=tmp_path / "out")
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    train = tokenizer.decode(open_tokens(prepared.train_path, prepared.dtype))
    assert train + tokenizer.decode(open_tokens(prepared.val_path, prepared.dtype)) == TEXT


def test_an_empty_corpus_is_refused(tmp_path: Path):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"text": ""}\n', encoding="utf-8")
    with pytest.raises(DataError):
        prepare_dataset(DataConfig(source=str(path)), cache_dir=tmp_path / "c")


def test_tinyshakespeare_matches_nanogpt_split(cache_dir: Path):
    prepared = prepare_dataset(DataConfig())
    assert prepared.vocab_size == 65
    assert (prepared.train_tokens, prepared.val_tokens) == (1_003_854, 111_540)
