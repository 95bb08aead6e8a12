"""Fine-tuning text, tokenized with the base run's tokenizer.

The same text must become the same ids the base model learned. `prepare_dataset` has no way to
take an existing tokenizer: for `char`, `bpe` and `sentencepiece` it learns a vocabulary from
the corpus it prepares, which gives other ids (a character vocabulary of new text is its own
sorted set). It does resume from its work directory, though, and a resumed run loads the
`tokenizer.json` it finds there instead of training one. So the work directory is seeded with
the base run's tokenizer and `prepare_dataset` does the rest (splits, shards, dialog masks, the
atomic rename). This leans on two details of prepare.py, the work directory's name and its
`dataset_key` file, so the result is checked: prepared data whose tokenizer is not the base's
is an error, never silently other ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tinygpt.atomic_files import write_bytes_atomic
from tinygpt.config import DataConfig
from tinygpt.data.chat_format import render_text
from tinygpt.data.prepare import PreparedData, dataset_key, prepare_dataset
from tinygpt.data.sources import Corpus, default_cache_dir, open_corpus
from tinygpt.errors import DataError, TinyGPTError
from tinygpt.eval.evaluate import same_tokenizer
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer
from tinygpt.tokenizers.char import MAX_NAMED_CHARS, CharTokenizer

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
    corpus = open_corpus(config, default_cache_dir())
    _check_characters(corpus, tokenizer, base_run)
    if out_dir.exists():
        # a leftover of an attempt that stopped before using it; prepare_dataset would take it
        # as it is, whatever text it holds (interrupted work is resumed from the work directory)
        shutil.rmtree(out_dir)
    _seed_work_directory(out_dir, dataset_key(corpus.fingerprint, config), tokenizer)
    prepared = prepare_dataset(config, out_dir=out_dir)
    _check_same_tokenizer(prepared.directory, tokenizer, base_run)
    return prepared


def _seed_work_directory(out_dir: Path, key: str, tokenizer: Tokenizer) -> None:
    """Make `prepare_dataset(out_dir=out_dir)` find `tokenizer` as if it had trained it; keep
    shards of an interrupted attempt on the same data with the same tokenizer."""
    work = out_dir.with_name(f".{out_dir.name}.work")  # prepare.py's name for it
    key_path = work / "dataset_key"
    is_same = key_path.is_file() and key_path.read_text(encoding="utf-8") == key
    if work.exists() and not (is_same and _has_tokenizer(work, tokenizer)):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(key_path, key.encode())
    tokenizer.save(work / TOKENIZER_FILE)


def _has_tokenizer(directory: Path, tokenizer: Tokenizer) -> bool:
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        return False
    try:
        return same_tokenizer(load_tokenizer(path), tokenizer)
    except TinyGPTError:  # a malformed leftover is not ours
        return False


def _check_same_tokenizer(directory: Path, tokenizer: Tokenizer, base_run: Path) -> None:
    prepared = load_tokenizer(directory / TOKENIZER_FILE)
    if not same_tokenizer(prepared, tokenizer):
        raise DataError(
            f"{directory} is tokenized with another {prepared.kind} vocabulary than the base run "
            f"{base_run} ({tokenizer.kind}); give the text itself, so it is tokenized with "
            "the base run's tokenizer"
        )


def _check_characters(corpus: Corpus, tokenizer: Tokenizer, base_run: Path) -> None:
    """A character vocabulary cannot grow: name the characters the base run never saw, up
    front, rather than as a tokenizer error halfway through preparing."""
    if not isinstance(tokenizer, CharTokenizer) or tokenizer.unk_id is not None:
        return
    seen: set[str] = set()
    for split in corpus.splits:
        for document in corpus.documents(split):
            seen.update(document if isinstance(document, str) else render_text(document))
    unknown = sorted(seen.difference(tokenizer.chars))
    if unknown:
        listed = ", ".join(repr(c) for c in unknown[:MAX_NAMED_CHARS])
        more = ", ..." if len(unknown) > MAX_NAMED_CHARS else ""
        raise DataError(
            f"{corpus.origin} has characters outside the base run's vocabulary: {listed}{more}; "
            f"fine-tuning keeps {base_run}'s character tokenizer, so remove them from the text"
        )
