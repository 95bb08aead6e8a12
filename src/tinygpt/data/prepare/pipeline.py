"""`prepare_dataset`: a corpus to prepared data once, in the cache (keyed by content) or an
`--out` folder, reused by every later call with the same content.

1. the tokenizer is trained once (or given by the caller) and saved in a work directory;
2. documents are grouped into shards that worker processes encode (`encoding`), each finished
   shard marked done, so an interrupted run picks up where it stopped;
3. the shards become the final files in a directory renamed into place (`token_files`).

The realised validation share is logged, with a warning when it is far from val_fraction (few
documents of uneven size can still make it so).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from tinygpt.atomic_files import temporary_name_pattern, write_bytes_atomic
from tinygpt.config import DataConfig
from tinygpt.data.prepare.encoding import encode_corpus
from tinygpt.data.prepare.meta import (
    FORMAT_VERSION,
    PREPARED_FILES,
    PreparedData,
    load_if_complete,
    load_prepared,
)
from tinygpt.data.prepare.prepared_source import prepared_source
from tinygpt.data.prepare.splitting import is_far_off, split_plan, validation_share
from tinygpt.data.prepare.token_files import write_token_files
from tinygpt.data.prepare.vocabulary import (
    check_characters,
    prepared_with,
    tokenizer_in,
    tokenizer_sha256,
)
from tinygpt.data.sources import Corpus, open_corpus
from tinygpt.directories import (
    DirectoryLock,
    check_output_dir,
    default_cache_dir,
    remove_stale_temporaries,
    sibling_lock_file,
)
from tinygpt.errors import DataError
from tinygpt.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)


def prepare_dataset(
    config: DataConfig,
    cache_dir: Path | None = None,
    out_dir: Path | None = None,
    tokenizer: Tokenizer | None = None,
) -> PreparedData:
    """Tokenize and split `config.source` once into `out_dir` (default: the cache, keyed by
    content); later calls with the same content reuse it. A source that is itself a prepared
    directory is used as it is.

    `tokenizer`, when given, is used instead of one built from the corpus (a run's own, so
    that new text gets the ids that run learned); a character vocabulary cannot grow, so text
    with characters outside it is an error."""
    already = prepared_source(config, tokenizer)
    if already is not None:
        return already
    if out_dir is not None:
        check_output_dir(out_dir, PREPARED_FILES)  # before anything is read or written
        if out_dir.name in ("", ".", ".."):  # `--out .`: its work folder is named after it
            out_dir = out_dir.resolve()
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    corpus = open_corpus(config, cache_dir)
    key = dataset_key(corpus.fingerprint, config, tokenizer)
    directory = out_dir or cache_dir / "prepared" / key
    existing = _existing(directory, cache_dir, corpus, config, tokenizer, out_dir)
    if existing is not None:
        logger.info("reusing prepared data in %s", existing.directory)
        return existing
    with _lock_for_writing(directory, is_cache=out_dir is None) as lock:
        # another process may have prepared it while this one waited for the lock
        existing = _existing(directory, cache_dir, corpus, config, tokenizer, out_dir)
        if existing is not None:
            logger.info("reusing prepared data in %s", existing.directory)
            return existing
        if out_dir is not None:
            check_output_dir(out_dir, PREPARED_FILES)
        # temporaries of a killed or failed run: no other writer is alive now
        remove_stale_temporaries(directory.parent, [temporary_name_pattern(directory.name)])
        prepared = _prepare(directory, key, config, corpus, tokenizer)
        if out_dir is not None:
            # nothing is left beside the user's folder. Safe to delete while held: a second
            # writer of an --out folder never waits on this file, so it was refused, or will
            # find the data complete
            lock.path.unlink(missing_ok=True)
        return prepared


def dataset_key(fingerprint: str, config: DataConfig, tokenizer: Tokenizer | None = None) -> str:
    """Everything that changes the files' content, and nothing else (not the source's path).
    A given tokenizer is identified by its JSON, so data of another vocabulary is never reused."""
    identity = {
        "fingerprint": fingerprint,
        "tokenizer": config.tokenizer,
        "tokenizer_vocab_size": config.tokenizer_vocab_size,
        "unknown_chars": config.unknown_chars,
        "val_fraction": config.val_fraction,
        "text_field": config.text_field,
        "format": config.format,
        "max_documents": config.max_documents,
        "format_version": FORMAT_VERSION,
    }
    if config.tokenizer in ("char", "gpt2"):  # their vocabulary does not depend on this field
        identity.pop("tokenizer_vocab_size")
    if tokenizer is not None:
        identity["tokenizer_sha256"] = tokenizer_sha256(tokenizer)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _existing(
    directory: Path,
    cache_dir: Path,
    corpus: Corpus,
    config: DataConfig,
    tokenizer: Tokenizer | None,
    out_dir: Path | None,
) -> PreparedData | None:
    """Complete data already in `directory`, or (for a given tokenizer) in the cache entry
    prepared without it, if its trained vocabulary is the same."""
    existing = load_if_complete(directory)
    if existing is None and tokenizer is not None and out_dir is None:
        existing = prepared_with(
            cache_dir / "prepared" / dataset_key(corpus.fingerprint, config), tokenizer
        )
    return existing


def _lock_for_writing(directory: Path, is_cache: bool) -> DirectoryLock:
    """The lock of one prepared directory. A cache entry is the same data whoever asks, so a
    second process waits and then reuses it; an `--out` folder is the user's, and a second
    writer is refused."""
    lock = DirectoryLock(sibling_lock_file(directory))
    if is_cache:
        lock.acquire(waiting_for=f"another process preparing the same data into {directory}")
    elif not lock.try_acquire():
        raise DataError(
            f"{directory} is being prepared by another tinygpt process "
            f"({lock.describe_holder()}); wait for it to finish, or choose another --out"
        )
    return lock


def _prepare(
    directory: Path, key: str, config: DataConfig, corpus: Corpus, tokenizer: Tokenizer | None
) -> PreparedData:
    if tokenizer is not None:
        check_characters(corpus, tokenizer)
    work = directory.with_name(f".{directory.name}.work")
    _open_work_directory(work, key)
    tokenizer = tokenizer_in(work, config, corpus, tokenizer)
    started = time.perf_counter()
    plan = split_plan(corpus)
    streams, text_sizes = encode_corpus(config, corpus, tokenizer, work, plan)
    meta = write_token_files(directory, work, streams, text_sizes, tokenizer, corpus, config, plan)
    shutil.rmtree(work, ignore_errors=True)
    share = validation_share(meta)
    logger.info(
        "prepared %s in %.1f s: %d train and %d val tokens (%.1f%% validation, split %s), "
        "vocab %d, in %s",
        corpus.origin, time.perf_counter() - started, meta["train_tokens"], meta["val_tokens"],
        100 * share, plan, tokenizer.vocab_size, directory,
    )  # fmt: skip
    if plan != "own_split" and is_far_off(share, config.val_fraction):
        logger.warning(
            "%s: validation holds %.1f%% of the tokens though val_fraction=%g: each document "
            "goes whole to one side, and these are few or uneven in size; give more, smaller "
            "documents (separated by <|endoftext|> lines) or change --val_fraction",
            corpus.origin, 100 * share, config.val_fraction,
        )  # fmt: skip
    return load_prepared(directory)


def _open_work_directory(work: Path, key: str) -> None:
    """Resume only shards made for the same data: an `out_dir` keeps its name when the corpus,
    the config or FORMAT_VERSION change, and their shards must not be mixed in."""
    key_path = work / "dataset_key"
    if work.exists() and _text_or_none(key_path) != key:
        logger.info("discarding %s, left by a run on other data", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(key_path, key.encode())


def _text_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
