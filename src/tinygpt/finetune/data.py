"""Fine-tuning text, tokenized with the base run's tokenizer.

The same text must become the same ids the base model learned, so the base run's tokenizer is
given to `prepare_dataset` rather than one learned from the new corpus (a character vocabulary
of new text is its own sorted set, other ids). Data that is already prepared must have been
tokenized with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tinygpt.config import DataConfig
from tinygpt.data.prepare import (
    PreparedData,
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


def prepare_with_tokenizer(
    config: DataConfig, tokenizer: Tokenizer, out_dir: Path, base_run: Path
) -> PreparedData:
    """Prepare `config.source` into `out_dir`, tokenized with `tokenizer` (the base run's). A
    source that is already a prepared directory is used as it is, if its tokenizer is the same."""
    source = Path(config.source).expanduser()
    if (source / "meta.json").is_file():
        _check_same_tokenizer(source, tokenizer, base_run)
        return prepare_dataset(config)
    _check_characters(config, tokenizer, base_run)
    if out_dir.exists():
        # a leftover of an attempt that stopped before using it; prepare_dataset would take it
        # as it is, whatever text it holds (interrupted work is resumed from the work directory)
        shutil.rmtree(out_dir)
    return prepare_dataset(config, out_dir=out_dir, tokenizer=tokenizer)


def _check_same_tokenizer(directory: Path, tokenizer: Tokenizer, base_run: Path) -> None:
    prepared = load_tokenizer(directory / TOKENIZER_FILE)
    if not same_tokenizer(prepared, tokenizer):
        raise DataError(
            f"{directory} is tokenized with another {prepared.kind} vocabulary than the base run "
            f"{base_run} ({tokenizer.kind}); give the text itself, so it is tokenized with "
            "the base run's tokenizer"
        )


def _check_characters(config: DataConfig, tokenizer: Tokenizer, base_run: Path) -> None:
    """A character vocabulary cannot grow: name the characters the base run never saw, and
    the base run, before anything is written."""
    corpus = open_corpus(config, default_cache_dir())
    unknown = unknown_characters(corpus, tokenizer)
    if unknown:
        raise DataError(
            f"{corpus.origin} has characters outside the base run's vocabulary: "
            f"{name_characters(unknown)}; fine-tuning keeps {base_run}'s character tokenizer, "
            "so remove them from the text"
        )
