"""`--data DIR` for a directory `tinygpt prepare` wrote (prepare/prepared_source.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli
from corpus_helpers import TEXT

from tinygpt.config import DataConfig, RunConfig
from tinygpt.data.prepare import prepare_dataset, with_prepared_settings
from tinygpt.errors import DataError
from tinygpt.presets import get_preset
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.tokenizers.char import CharTokenizer


@pytest.fixture
def bpe_directory(corpus: Path, tmp_path: Path, cache_dir: Path) -> Path:
    config = DataConfig(
        source=str(corpus), tokenizer="bpe", tokenizer_vocab_size=300, val_fraction=0.2, workers=1
    )
    return prepare_dataset(config, out_dir=tmp_path / "prepared").directory


def test_a_prepared_directory_brings_its_own_settings(bpe_directory: Path):
    config = with_prepared_settings(RunConfig(data=DataConfig(source=str(bpe_directory))))
    data = config.data
    assert (data.tokenizer, data.tokenizer_vocab_size, data.val_fraction) == ("bpe", 300, 0.2)
    assert prepare_dataset(data).directory == bpe_directory


def test_a_presets_tokenizer_yields_to_the_directorys(bpe_directory: Path):
    preset = get_preset("tinystories-small")  # gpt2, for its own TinyStories source
    config = dataclasses.replace(
        preset, data=dataclasses.replace(preset.data, source=str(bpe_directory))
    )
    assert with_prepared_settings(config).data.tokenizer == "bpe"


def test_a_setting_that_contradicts_the_directory_names_both(bpe_directory: Path):
    data = DataConfig(source=str(bpe_directory), tokenizer="sentencepiece", val_fraction=0.2)
    with pytest.raises(
        DataError, match=r"prepared with tokenizer=bpe \(the run sets sentencepiece\)"
    ):
        with_prepared_settings(RunConfig(data=data))


@pytest.mark.slow
def test_train_on_a_prepared_directory_needs_no_tokenizer_flag(
    capsys, tmp_path: Path, small_text_file: Path
):
    data = tmp_path / "prepared"
    code, out, err = run_cli(capsys, "prepare", small_text_file, "--out", data, "--tokenizer",
                             "bpe", "--tokenizer_vocab_size", "300", "--workers", "1")  # fmt: skip
    assert code == 0, err
    assert "--tokenizer" not in out  # the hint to train with it
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", run_dir, *TINY,
                           "--max_iters", "2", "--eval_interval", "2")  # fmt: skip
    assert code == 0, err  # was: prepared with the bpe tokenizer but the run asks for char
    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert (saved["data"]["tokenizer"], saved["data"]["tokenizer_vocab_size"]) == ("bpe", 300)
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", tmp_path / "other",
                           "--tokenizer", "gpt2", *TINY)  # fmt: skip
    assert_one_line_error(code, err, "prepared with tokenizer=bpe (the run sets gpt2)")
    assert not (tmp_path / "other").exists()


def test_a_directory_prepared_before_the_split_rule_changed_is_still_read(
    corpus: Path, tmp_path: Path, cache_dir: Path
):
    prepared = prepare_dataset(DataConfig(source=str(corpus), workers=1), out_dir=tmp_path / "p")
    meta = json.loads((prepared.directory / "meta.json").read_text(encoding="utf-8"))
    meta["format_version"] = 3  # its files have the same layout
    (prepared.directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert prepare_dataset(DataConfig(source=str(prepared.directory))) == prepared


def test_prepared_data_of_another_vocabulary_is_refused(corpus: Path, cache_dir: Path):
    default = prepare_dataset(DataConfig(source=str(corpus), workers=1))
    config = DataConfig(source=str(default.directory))
    with pytest.raises(DataError, match="another vocabulary"):
        prepare_dataset(config, tokenizer=CharTokenizer.train(TEXT + "xyz"))
    assert prepare_dataset(config, tokenizer=load_tokenizer(default.tokenizer_path)) == default


def test_a_prepared_directory_can_be_the_data_source(stories_file, tmp_path):
    prepared = prepare_dataset(DataConfig(source=str(stories_file)), out_dir=tmp_path / "p")
    again = prepare_dataset(DataConfig(source=str(tmp_path / "p")))
    assert again == prepared
    with pytest.raises(DataError, match="prepared with the char tokenizer"):
        prepare_dataset(DataConfig(source=str(tmp_path / "p"), tokenizer="gpt2"))
