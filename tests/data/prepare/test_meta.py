"""meta.json and `PreparedData` (prepare/meta.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_helpers import TEXT

from tinygpt.config import DataConfig
from tinygpt.data.prepare import load_prepared, prepare_dataset
from tinygpt.data.prepare.meta import FORMAT_VERSION
from tinygpt.errors import DataError


def test_meta_json_records_how_the_data_was_made(corpus: Path, cache_dir: Path):
    prepared = prepare_dataset(DataConfig(source=str(corpus), unknown_chars="unk"))
    meta = json.loads((prepared.directory / "meta.json").read_text(encoding="utf-8"))
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["origin"] == str(corpus)
    assert meta["tokenizer"] == "char"
    assert meta["unknown_chars"] == "unk"
    assert meta["val_fraction"] == 0.1
    assert meta["vocab_size"] == len(set(TEXT)) + 1
    assert load_prepared(prepared.directory) == prepared


def test_load_prepared_without_meta_raises(tmp_path: Path):
    with pytest.raises(DataError, match=r"meta\.json does not exist"):
        load_prepared(tmp_path)


def test_data_prepared_before_text_sizes_were_recorded_still_loads(corpus: Path, cache_dir: Path):
    prepared = prepare_dataset(DataConfig(source=str(corpus), workers=1))
    meta_path = prepared.directory / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["val_chars"], meta["val_bytes"]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    old = load_prepared(prepared.directory)
    assert (old.val_chars, old.val_bytes) == (None, None)
    assert old.val_tokens == prepared.val_tokens
