"""New text tokenized with another run's tokenizer, for a run that starts from its weights.

Fine-tuning (`tinygpt finetune`) and training on from weights (`train --init-from`) both
train a model on text it has not seen. The same text must become the ids the model learned,
so the source's tokenizer is given to `prepare_dataset` rather than one learned from the new
corpus (a character vocabulary of new text is its own sorted set, other ids). Data that is
already prepared must have been tokenized with it.

The tokens are written into a staging folder beside the new run (`.NAME.data`) before the run
exists, so that a mistake in the text leaves no run behind, and moved into `RUN_DIR/data` once
the run directory is made (`StagedData`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tinygpt.atomic_files import fsync_directory
from tinygpt.config import DataConfig
from tinygpt.data.prepare import (
    PreparedData,
    load_prepared,
    name_characters,
    prepare_dataset,
    same_tokenizer,
    unknown_characters,
)
from tinygpt.data.sources import open_corpus
from tinygpt.directories import default_cache_dir
from tinygpt.errors import DataError
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer

TOKENIZER_FILE = "tokenizer.json"
RUN_DATA_DIR = "data"
# the data fields that decide the token ids, which stay the source's
TOKENIZER_FIELDS = ("tokenizer", "tokenizer_vocab_size", "gpt2_bpe_dir", "unknown_chars")


@dataclass(frozen=True)
class StagedData:
    """`prepared` tokens and the folder the new run's config must name as its data
    (`data_dir`): RUN_DIR/data for text tokenized here, or a prepared folder used as it is."""

    prepared: PreparedData
    data_dir: Path
    is_staged: bool

    def data_config(self, config: DataConfig) -> DataConfig:
        """`config` naming the tokens, so that `tinygpt eval` and `train --resume` read ids of
        the source's tokenizer rather than tokenize the text afresh."""
        return dataclasses.replace(config, source=str(self.data_dir.resolve()))

    def move_into_run(self) -> PreparedData:
        """After the run directory exists: the staged tokens become RUN_DIR/data, in one
        rename of the finished folder."""
        if not self.is_staged:
            return self.prepared
        os.replace(self.prepared.directory, self.data_dir)
        fsync_directory(self.data_dir.parent)
        return load_prepared(self.data_dir)


def stage_tokenized_text(
    config: DataConfig, tokenizer: Tokenizer, run_dir: Path, source: Path
) -> StagedData:
    """Tokenize `config.source` with `tokenizer` (that of `source`, a run or model the errors
    name) into a staging folder beside `run_dir`; a prepared folder is used as it is, if its
    tokenizer is the same."""
    staging = run_dir.with_name(f".{run_dir.name}.{RUN_DATA_DIR}")
    prepared = prepare_with_tokenizer(config, tokenizer, staging, source)
    is_staged = prepared.directory == staging
    data_dir = run_dir / RUN_DATA_DIR if is_staged else prepared.directory
    return StagedData(prepared, data_dir, is_staged)


def prepare_with_tokenizer(
    config: DataConfig, tokenizer: Tokenizer, out_dir: Path, source: Path
) -> PreparedData:
    """Prepare `config.source` into `out_dir`, tokenized with `tokenizer` (the source's). A
    source that is already a prepared directory is used as it is, if its tokenizer is the same."""
    text = Path(config.source).expanduser()
    if (text / "meta.json").is_file():
        _check_same_tokenizer(text, tokenizer, source)
        return prepare_dataset(config)
    _check_characters(config, tokenizer, source)
    if out_dir.exists():
        # a leftover of an attempt that stopped before using it; prepare_dataset would take it
        # as it is, whatever text it holds (interrupted work is resumed from the work directory)
        shutil.rmtree(out_dir)
    return prepare_dataset(config, out_dir=out_dir, tokenizer=tokenizer)


def _check_same_tokenizer(directory: Path, tokenizer: Tokenizer, source: Path) -> None:
    prepared = load_tokenizer(directory / TOKENIZER_FILE)
    if not same_tokenizer(prepared, tokenizer):
        raise DataError(
            f"{directory} is tokenized with another {prepared.kind} vocabulary than {source} "
            f"({tokenizer.kind}); give the text itself, so it is tokenized with {source}'s "
            "tokenizer"
        )


def _check_characters(config: DataConfig, tokenizer: Tokenizer, source: Path) -> None:
    """A character vocabulary cannot grow: name the characters the source never saw, and the
    source, before anything is written."""
    corpus = open_corpus(config, default_cache_dir())
    unknown = unknown_characters(corpus, tokenizer)
    if unknown:
        raise DataError(
            f"{corpus.origin} has characters outside the vocabulary of {source}: "
            f"{name_characters(unknown)}; a run that starts from its weights keeps its "
            "character tokenizer, so remove them from the text"
        )
