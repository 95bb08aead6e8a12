"""A corpus to `train.bin`, `val.bin` (+ loss masks for dialogs), `tokenizer.json`, `meta.json`.

Streamed, parallel and resumable, so a multi-gigabyte corpus is prepared in bounded memory on
every core, and an interrupted run picks up where it stopped:

1. the tokenizer is trained once (or given by the caller: a run's own, so that other text gets
   the ids that run learned) and saved in a work directory;
2. documents are grouped into shards of about SHARD_TEXT_BYTES; worker processes encode them;
   each finished shard is written with a `.done` marker, and a resumed run skips those;
3. the shards are concatenated into the final files in a temporary directory that is renamed
   into place: a reader sees complete prepared data or none.

Which text is validation:
- the source's own validation split where it has one (DailyDialog, Hugging Face datasets);
- otherwise whole documents, every document going to validation with probability val_fraction
  by a fixed rule on its index (never a cut through the middle of a story);
- except a file without document separators big enough to tip that split (more than half of
  val_fraction of the corpus: three such files once gave 39% validation at 0.1): it is cut by
  position, its last val_fraction of characters (at a line end) validating;
- a corpus that is a single document (TinyShakespeare) is cut by position: the first 90% of the
  tokens train, the rest validate, exactly as nanoGPT does, so losses compare one to one.
The realised share is logged, with a warning when it is far from val_fraction (few documents of
uneven size can still make it so).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tinygpt.atomic_files import fsync_directory, write_bytes_atomic, write_synced
from tinygpt.config import DataConfig, RunConfig, field_types, parse_value
from tinygpt.data.chat_format import Conversation, encode_conversation, render_text
from tinygpt.data.sources import Corpus, WholeFile, default_cache_dir, open_corpus
from tinygpt.directories import (
    DirectoryLock,
    check_output_dir,
    read_regular_file,
    remove_stale_temporaries,
    sibling_lock_file,
)
from tinygpt.errors import ConfigError, DataError, TinyGPTError
from tinygpt.presets import PRESETS
from tinygpt.tokenizers.base import Tokenizer, build_tokenizer, load_tokenizer
from tinygpt.tokenizers.bpe import split_text
from tinygpt.tokenizers.char import MAX_NAMED_CHARS, CharTokenizer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 4  # bump when the files' layout or meaning changes; old caches are then ignored
# versions whose files `--data DIR` still reads: 4 changed only which text a folder of large
# files without separators gives validation
READABLE_FORMAT_VERSIONS = (3, FORMAT_VERSION)
SHARD_TEXT_BYTES = 4 << 20  # text per unit of parallel work: big enough to amortise, small in RAM
MIN_SPLIT_TOKENS = 2  # a split needs at least one (input, target) pair
GOLDEN_RATIO_FRACTION = 0.6180339887498949  # spreads document indices evenly over [0, 1)
# a WholeFile holding more than this share of val_fraction of the corpus is cut by position:
# sent whole to one side, it alone would move the validation share by over half its target
POSITION_SPLIT_SHARE = 0.5
FAR_FROM_VAL_FRACTION = 2.0  # warn when the validation share is over 2x or under 1/2x the asked
TOKEN_DTYPES = ("uint16", "uint32")  # little-endian on disk
MAX_META_BYTES = 16 << 20  # a meta.json is a few hundred bytes; a link to /dev/zero is endless
# what a prepared directory holds: `prepare --out` may replace a folder of these, nothing else
PREPARED_FILES = (
    "train.bin", "val.bin", "train.mask.bin", "val.mask.bin", "tokenizer.json", "meta.json"
)  # fmt: skip

Document = str | Conversation


@dataclass(frozen=True)
class PreparedData:
    directory: Path
    train_path: Path
    val_path: Path
    tokenizer_path: Path
    dtype: str  # "uint16" or "uint32", little-endian on disk
    vocab_size: int
    train_tokens: int
    val_tokens: int
    source_sha256: str  # the corpus fingerprint
    has_loss_mask: bool = False  # dialogs: train.mask.bin / val.mask.bin, 1 on Bot tokens
    # characters and UTF-8 bytes of the validation text (separators excluded), so that losses
    # per token convert to bits per character; None for data prepared before they were recorded
    val_chars: int | None = None
    val_bytes: int | None = None

    def mask_path(self, split: str) -> Path | None:
        return self.directory / f"{split}.mask.bin" if self.has_loss_mask else None


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
    already = _prepared_source(config, tokenizer)
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
        remove_stale_temporaries(directory.parent, [f".{directory.name}.tmp-*"])
        prepared = _prepare(directory, key, config, corpus, tokenizer)
        if out_dir is not None:
            # nothing is left beside the user's folder. Safe to delete while held: a second
            # writer of an --out folder never waits on this file, so it was refused, or will
            # find the data complete
            lock.path.unlink(missing_ok=True)
        return prepared


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
    existing = _load_if_complete(directory)
    if existing is None and tokenizer is not None and out_dir is None:
        existing = _built_with(
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
        _check_characters(corpus, tokenizer)
    work = directory.with_name(f".{directory.name}.work")
    _open_work_directory(work, key)
    tokenizer = _tokenizer_in(work, config, corpus, tokenizer)
    started = time.perf_counter()
    plan = _split_plan(corpus)
    streams, text_sizes = _encode_corpus(config, corpus, tokenizer, work, plan)
    meta = _assemble(directory, work, streams, text_sizes, tokenizer, corpus, config, plan)
    shutil.rmtree(work, ignore_errors=True)
    share = _validation_share(meta)
    logger.info(
        "prepared %s in %.1f s: %d train and %d val tokens (%.1f%% validation, split %s), "
        "vocab %d, in %s",
        corpus.origin, time.perf_counter() - started, meta["train_tokens"], meta["val_tokens"],
        100 * share, plan, tokenizer.vocab_size, directory,
    )  # fmt: skip
    if plan != "own_split" and _is_far_off(share, config.val_fraction):
        logger.warning(
            "%s: validation holds %.1f%% of the tokens though val_fraction=%g: each document "
            "goes whole to one side, and these are few or uneven in size; give more, smaller "
            "documents (separated by <|endoftext|> lines) or change --val_fraction",
            corpus.origin, 100 * share, config.val_fraction,
        )  # fmt: skip
    return load_prepared(directory)


def _prepared_source(config: DataConfig, tokenizer: Tokenizer | None) -> PreparedData | None:
    """`--data DIR` where DIR was written by `tinygpt prepare`: check it suits the config (and
    the given tokenizer: ids of another vocabulary would be other text to a model)."""
    directory = Path(config.source).expanduser()
    meta_path = directory / "meta.json"
    if not (meta_path.exists() or meta_path.is_symlink()):  # a broken link is refused below
        return None
    prepared = _check_complete(directory, READABLE_FORMAT_VERSIONS)
    meta = _read_meta(directory / "meta.json")
    stored = load_tokenizer(prepared.tokenizer_path)
    if (stored.kind, stored.vocab_size) != (meta.get("tokenizer"), prepared.vocab_size):
        raise DataError(
            f"{prepared.tokenizer_path} is a {stored.kind} tokenizer of {stored.vocab_size} "
            f"tokens, but meta.json records a {meta.get('tokenizer')} tokenizer of "
            f"{prepared.vocab_size}; the two do not belong together: prepare the data again"
        )
    if tokenizer is not None:
        if not same_tokenizer(stored, tokenizer):
            raise DataError(
                f"{directory} was prepared with another vocabulary than the given "
                f"{tokenizer.kind} tokenizer; give the text itself, to be tokenized with it"
            )
        return prepared
    if meta.get("tokenizer") != config.tokenizer:
        raise DataError(
            f"{directory} was prepared with the {meta.get('tokenizer')} tokenizer but the run "
            f"asks for {config.tokenizer}; pass --tokenizer {meta.get('tokenizer')} or prepare "
            "it again"
        )
    return prepared


def with_prepared_settings(config: RunConfig) -> RunConfig:
    """`config` with the data settings of the prepared directory its source names (unchanged
    for any other source): such a directory describes itself, so `--data DIR` needs no
    `--tokenizer`, and config.json records what the tokens really are. A setting still at the
    value the preset (or the defaults) gives it takes the directory's; one set to another value
    than the directory's is an error naming both."""
    data = config.data
    directory = Path(data.source).expanduser()
    if not (directory / "meta.json").is_file():
        return config
    recorded = _recorded_settings(directory)
    preset = PRESETS.get(config.preset)
    unset = preset().data if preset is not None else DataConfig()
    conflicts = [
        f"{name}={value} (the run sets {getattr(data, name)})"
        for name, value in recorded.items()
        if getattr(data, name) not in (value, getattr(unset, name))
    ]
    if conflicts:
        raise DataError(
            f"{directory} was prepared with {', '.join(conflicts)}; leave those settings out (a "
            "prepared directory brings its own) or prepare the text again with them"
        )
    adopted = {name: value for name, value in recorded.items() if getattr(data, name) != value}
    if adopted:
        described = ", ".join(f"{name}={value}" for name, value in adopted.items())
        logger.info("using the settings %s was prepared with: %s", directory, described)
    return dataclasses.replace(config, data=dataclasses.replace(data, **adopted))


def _recorded_settings(directory: Path) -> dict[str, Any]:
    """The DataConfig fields that meta.json records and that decide the tokens: the tokenizer
    and, where it has them, its size and unknown-character policy; the split; the format."""
    meta_path = directory / "meta.json"
    meta = _read_meta(meta_path)
    try:
        names = ["tokenizer", "val_fraction", "format"]
        if meta["tokenizer"] == "char":
            names.append("unknown_chars")
        if meta["tokenizer"] in ("bpe", "sentencepiece") and "tokenizer_vocab_size" in meta:
            names.append("tokenizer_vocab_size")  # recorded since FORMAT_VERSION 4
        types = field_types(DataConfig)
        return {name: parse_value(name, types[name], meta[name]) for name in names}
    except (ValueError, KeyError, TypeError, ConfigError) as err:
        raise DataError(f"{meta_path} is unreadable ({err}); prepare the data again") from None


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


# ----------------------------------------------------------------------------------------------
# Tokenizer


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """The identity of a vocabulary: the hash of its JSON, keys sorted so it is canonical.
    GPT-2's is fixed, whatever form its JSON has (an older one names a folder of its files)."""
    document = {"kind": "gpt2"} if tokenizer.kind == "gpt2" else tokenizer.to_dict()
    text = json.dumps(document, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def same_tokenizer(first: Tokenizer, second: Tokenizer) -> bool:
    """Equal vocabularies, so equal text gets equal ids."""
    return tokenizer_sha256(first) == tokenizer_sha256(second)


def unknown_characters(corpus: Corpus, tokenizer: Tokenizer) -> list[str]:
    """The corpus's characters that `tokenizer` cannot encode, sorted: only a character
    vocabulary without an unknown id has any (subword vocabularies fall back to bytes)."""
    if not isinstance(tokenizer, CharTokenizer) or tokenizer.unk_id is not None:
        return []
    seen: set[str] = set()
    for split in corpus.splits:
        for document in _docs(corpus, split):
            seen.update(_as_text(document))
    return sorted(seen.difference(tokenizer.chars))


def name_characters(characters: list[str]) -> str:
    """The first few of `characters` for a one-line error message."""
    more = ", ..." if len(characters) > MAX_NAMED_CHARS else ""
    return ", ".join(repr(c) for c in characters[:MAX_NAMED_CHARS]) + more


def _check_characters(corpus: Corpus, tokenizer: Tokenizer) -> None:
    """Up front, not halfway through encoding, and naming the text rather than a shard."""
    unknown = unknown_characters(corpus, tokenizer)
    if unknown:
        raise DataError(
            f"{corpus.origin} has characters outside the {tokenizer.vocab_size}-character "
            f"vocabulary it is tokenized with: {name_characters(unknown)}; a character "
            "vocabulary cannot grow, so remove them from the text"
        )


def _built_with(directory: Path, tokenizer: Tokenizer) -> PreparedData | None:
    """Data prepared without a given tokenizer whose trained vocabulary is `tokenizer` (a run's
    own training data): the same files, so reused rather than prepared again."""
    prepared = _load_if_complete(directory)
    if prepared is None:
        return None
    try:
        is_same = same_tokenizer(load_tokenizer(prepared.tokenizer_path), tokenizer)
    except TinyGPTError:  # a damaged tokenizer.json is not a match
        return None
    return prepared if is_same else None


def _tokenizer_in(
    work: Path, config: DataConfig, corpus: Corpus, given: Tokenizer | None = None
) -> Tokenizer:
    """Train the tokenizer on the training documents once; a resumed run loads it back. A given
    tokenizer is saved for the worker processes to load."""
    path = work / "tokenizer.json"
    if given is not None:
        given.save(path)
        return given
    if path.exists():
        return load_tokenizer(path)

    # Char vocabularies come from every split (nanoGPT's convention: validation has no unknown
    # characters) plus the document separator; subword vocabularies learn from training text.
    splits = corpus.splits if config.tokenizer == "char" else ("train",)
    extra = ["\n\n"] if config.tokenizer == "char" else []

    def training_texts() -> Iterator[str]:
        texts = (_as_text(doc) for split in splits for doc in _docs(corpus, split))
        return itertools.chain(texts, extra)

    tokenizer = build_tokenizer(config, training_texts)
    tokenizer.save(path)
    return tokenizer


def _as_text(document: Document) -> str:
    return document if isinstance(document, str) else render_text(document)


def _docs(corpus: Corpus, split: str) -> Iterator[Document]:
    return iter(corpus.documents(split))


# ----------------------------------------------------------------------------------------------
# Which text goes where


def _split_plan(corpus: Corpus) -> str:
    if "validation" in corpus.splits:
        return "own_split"
    first_two = list(itertools.islice(_docs(corpus, "train"), 2))
    if not first_two:
        raise DataError(f"{corpus.origin} has no documents; give a corpus with some text")
    return "by_position" if len(first_two) == 1 else "by_document"


def _jobs(corpus: Corpus, config: DataConfig, plan: str) -> Iterator[tuple[str, list[Any]]]:
    """(shard name, [(destination, document), ...]) in a fixed order, so a resumed run cuts the
    same shards and can skip the finished ones."""
    if plan == "own_split":
        for split, dest in (("train", "train"), ("validation", "val")):
            yield from _shards(split, ((dest, doc) for doc in _docs(corpus, split)))
    elif plan == "by_document":
        yield from _shards("train", _assigned_documents(corpus, config.val_fraction))
    else:  # one document: cut into pieces at line ends, encoded in parallel, split afterwards
        # "all" holds pieces of that one document, so no separator is put after them
        (document,) = _docs(corpus, "train")
        yield from _shards("train", (("all", piece) for piece in _pieces(_as_text(document))))


def _assigned_documents(corpus: Corpus, val_fraction: float) -> Iterator[tuple[str, Document]]:
    """(destination, document): whole documents by the rule on their index, large files without
    separators in two parts by position. Every document keeps its index, so the rule puts the
    others where it always did (`eval` finds the validation conversations by it)."""
    total = corpus.total_bytes("train") or 0  # unknown: every file without separators is large
    for index, document in enumerate(_docs(corpus, "train")):
        if isinstance(document, WholeFile) and (
            _utf8_size(document) > POSITION_SPLIT_SHARE * val_fraction * total
        ):
            yield from _parts_by_position(document, val_fraction)
        else:
            yield ("val" if _is_validation(index, val_fraction) else "train", document)


def _validation_share(meta: dict[str, Any]) -> float:
    """The share of the prepared tokens that validate."""
    return meta["val_tokens"] / (meta["train_tokens"] + meta["val_tokens"])


def _is_far_off(share: float, val_fraction: float) -> bool:
    return not val_fraction / FAR_FROM_VAL_FRACTION <= share <= FAR_FROM_VAL_FRACTION * val_fraction


def _is_validation(index: int, val_fraction: float) -> bool:
    return (index * GOLDEN_RATIO_FRACTION) % 1.0 < val_fraction


def _parts_by_position(text: str, val_fraction: float) -> list[tuple[str, str]]:
    """The text's first 1 - val_fraction of characters to train and the rest to validation, cut
    at the line end nearest that point (mid-line only in a text without one). The two parts
    are two documents from now on, each followed by the separator."""
    target = round(len(text) * (1.0 - val_fraction))
    line_ends = (text.rfind("\n", 0, target) + 1, text.find("\n", target) + 1)
    inside = [end for end in line_ends if 0 < end < len(text)]
    cut = min(inside, key=lambda end: abs(end - target)) if inside else target
    parts = (("train", text[:cut]), ("val", text[cut:]))
    return [(dest, part) for dest, part in parts if part.strip()]


def _pieces(text: str) -> Iterator[str]:
    """Cut one long text into pieces of ~SHARD_TEXT_BYTES characters at a newline between two
    non-space characters, where the pieces encode to the ids of the whole text (`split_text`: a
    newline after a space would end a piece with a " \n" token that the whole text lacks)."""
    return (piece for piece in split_text(text, SHARD_TEXT_BYTES) if piece)


def _shards(split: str, items: Iterable[tuple[str, Document]]) -> Iterator[tuple[str, list]]:
    batch: list[tuple[str, Document]] = []
    size = 0
    for index in itertools.count():
        for item in items:
            batch.append(item)
            size += _size(item[1])
            if size >= SHARD_TEXT_BYTES:
                break
        if not batch:
            return
        yield f"{split}-{index:06d}", batch
        batch, size = [], 0


def _size(document: Document) -> int:
    """Characters of text, the unit shards are cut in (progress counts UTF-8 bytes)."""
    if isinstance(document, str):
        return len(document)
    return sum(len(user) + len(bot) for user, bot in document.turns)


def _utf8_size(document: Document) -> int:
    """UTF-8 bytes of the text. `isascii()` is O(1) on CPython's compact strings, so an ASCII
    corpus costs nothing and others one C-level encode, never a Python loop over characters."""
    if isinstance(document, str):
        texts = [document]
    else:
        texts = [text for turn in document.turns for text in turn]
    return sum(len(t) if t.isascii() else len(t.encode("utf-8", "surrogatepass")) for t in texts)


# ----------------------------------------------------------------------------------------------
# Parallel encoding


TextSizes = dict[str, list[tuple[int, int]]]  # per destination, (characters, bytes) per shard


def _encode_corpus(
    config: DataConfig, corpus: Corpus, tokenizer: Tokenizer, work: Path, plan: str
) -> tuple[dict[str, list[str]], TextSizes]:
    """Encode every shard not already done; returns, per destination, the shard names in order
    and the characters and bytes of text in each (counted here, where the text passes anyway)."""
    workers = config.workers or os.cpu_count() or 1
    total = sum(corpus.total_bytes(split) or 0 for split in corpus.splits) or None
    progress = tqdm(
        total=total, unit="B", unit_scale=True, desc="tokenize", disable=not sys.stderr.isatty()
    )
    names: dict[str, list[str]] = {"train": [], "val": [], "all": []}
    sizes: TextSizes = {dest: [] for dest in names}
    with progress, EncoderPool(workers, work / "tokenizer.json", config.format) as submit:
        pending: list[tuple[str, list, concurrent.futures.Future | None]] = []
        for name, batch in _jobs(corpus, config, plan):
            done = (work / f"{name}.done").exists()
            pending.append((name, batch, None if done else submit(batch)))
            if len(pending) >= 2 * workers:  # bounded memory: at most 2 shards per worker
                _finish(pending.pop(0), work, names, sizes, progress)
        while pending:
            _finish(pending.pop(0), work, names, sizes, progress)
        # the bar counts the documents' text; the source's bytes also hold what reading drops
        # (document separators, blank lines, JSON syntax), so end it at 100% once all is read
        if progress.total is not None:
            progress.update(max(0, progress.total - progress.n))
    return names, sizes


def _finish(
    entry: tuple[str, list, concurrent.futures.Future | None],
    work: Path,
    names: dict[str, list[str]],
    sizes: TextSizes,
    progress: tqdm,
) -> None:
    name, batch, future = entry
    if future is not None:
        outputs = future.result()
        for dest, (ids, mask) in outputs.items():
            write_synced(work / f"{name}.{dest}.bin", ids.tobytes())
            if mask is not None:
                write_synced(work / f"{name}.{dest}.mask.bin", mask.tobytes())
        write_bytes_atomic(work / f"{name}.done", json.dumps(sorted(outputs)).encode())
    for dest in json.loads((work / f"{name}.done").read_text()):
        names[dest].append(name)
        documents = [doc for doc_dest, doc in batch if doc_dest == dest]
        sizes[dest].append((sum(map(_size, documents)), sum(map(_utf8_size, documents))))
    progress.update(sum(_utf8_size(doc) for _, doc in batch))  # bytes, as total counts them


class EncoderPool:
    """Submit shards to worker processes, or encode inline when one worker is asked for."""

    def __init__(self, workers: int, tokenizer_path: Path, data_format: str) -> None:
        self.args = (str(tokenizer_path), data_format)
        self.executor = None
        if workers > 1:
            # spawn, not fork: the parent may hold torch's and tokenizers' thread pools
            self.executor = concurrent.futures.ProcessPoolExecutor(
                workers, multiprocessing.get_context("spawn"), _init_worker, self.args
            )

    def __enter__(self) -> Callable[[list], concurrent.futures.Future]:
        if self.executor is None:
            _init_worker(*self.args)
            return _run_inline
        return lambda batch: self.executor.submit(_encode_batch, batch)

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def _run_inline(batch: list) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(_encode_batch(batch))
    return future


_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_path: str, data_format: str) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per worker process
    _WORKER["tokenizer"] = load_tokenizer(Path(tokenizer_path))
    _WORKER["format"] = data_format


def _encode_batch(batch: list[tuple[str, Document]]) -> dict[str, tuple[np.ndarray, Any]]:
    """Encode one shard: per destination, the ids (documents each followed by the separator;
    "all", the pieces of one document, without), already in the token file's dtype, and for
    dialogs the loss mask (1 on Bot reply tokens)."""
    tokenizer: Tokenizer = _WORKER["tokenizer"]
    dtype = token_dtype(tokenizer.vocab_size)
    outputs = {}
    for dest in dict.fromkeys(dest for dest, _ in batch):  # destinations in order of appearance
        documents = [doc for doc_dest, doc in batch if doc_dest == dest]
        separator_ids = [] if dest == "all" else tokenizer.document_separator()
        separator = np.asarray(separator_ids, dtype=dtype)
        if _WORKER["format"] == "dialog":
            outputs[dest] = _encode_conversations(documents, tokenizer, separator)
        else:
            outputs[dest] = (_encode_texts(documents, tokenizer, separator), None)
    return outputs


def _encode_texts(texts: list[str], tokenizer: Tokenizer, separator: np.ndarray) -> np.ndarray:
    """One batch call for the whole shard: tokenizers pay their per-call cost (thread pools,
    Python-to-Rust hops) once per shard, not once per story."""
    if isinstance(tokenizer, CharTokenizer):  # its per-text encoding is already vectorised
        encoded = [tokenizer.encode_array(text) for text in texts]
    else:
        encoded = tokenizer.encode_batch(texts)
    arrays = [np.asarray(ids, dtype=separator.dtype) for ids in encoded]
    return np.concatenate([part for ids in arrays for part in (ids, separator)])


def _encode_conversations(
    conversations: list[Conversation], tokenizer: Tokenizer, separator: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    no_loss = np.zeros(len(separator), dtype=np.uint8)
    ids, masks = [], []
    for conversation in conversations:
        conv_ids, conv_mask = encode_conversation(conversation, tokenizer)
        ids += [np.asarray(conv_ids, dtype=separator.dtype), separator]
        masks += [np.asarray(conv_mask, dtype=np.uint8), no_loss]
    return np.concatenate(ids), np.concatenate(masks)


# ----------------------------------------------------------------------------------------------
# Final files


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def _assemble(
    directory: Path,
    work: Path,
    streams: dict[str, list[str]],
    text_sizes: TextSizes,
    tokenizer: Tokenizer,
    corpus: Corpus,
    config: DataConfig,
    plan: str,
) -> dict[str, Any]:
    dtype = token_dtype(tokenizer.vocab_size)
    has_mask = config.format == "dialog"
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype,
        "vocab_size": tokenizer.vocab_size,
        "source_sha256": corpus.fingerprint,
        "origin": corpus.origin,
        "tokenizer": tokenizer.kind,
        "tokenizer_vocab_size": config.tokenizer_vocab_size,  # asked; vocab_size is what it has
        "unknown_chars": config.unknown_chars,
        "val_fraction": config.val_fraction,
        "split": plan,
        "format": config.format,
        "has_loss_mask": has_mask,
    }

    def write(temp_dir: Path) -> None:
        if plan == "by_position":
            counts = _cut_by_position(work, streams["all"], temp_dir, dtype, config)
            val_chars, val_bytes = _val_text_size_by_position(
                work, streams["all"], text_sizes["all"], counts["train"], dtype, tokenizer
            )
        else:
            counts = {
                dest: _concatenate(work, streams[dest], dest, temp_dir, has_mask, dtype)
                for dest in ("train", "val")
            }
            val_chars = sum(chars for chars, _ in text_sizes["val"])
            val_bytes = sum(size for _, size in text_sizes["val"])
        for dest, count in counts.items():
            if count < MIN_SPLIT_TOKENS:
                raise DataError(
                    f"{corpus.origin} leaves {count} tokens for {dest} (val_fraction="
                    f"{config.val_fraction}); each split needs at least {MIN_SPLIT_TOKENS}: "
                    "give more text or change --val_fraction"
                )
        meta.update(
            train_tokens=counts["train"],
            val_tokens=counts["val"],
            val_chars=val_chars,
            val_bytes=val_bytes,
        )
        shutil.copyfile(work / "tokenizer.json", temp_dir / "tokenizer.json")
        write_synced(temp_dir / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())

    _publish_directory(directory, write)
    return meta


def _concatenate(
    work: Path, names: list[str], dest: str, out_dir: Path, has_mask: bool, dtype: str
) -> int:
    suffixes = [".bin", ".mask.bin"] if has_mask else [".bin"]
    for suffix in suffixes:
        with open(out_dir / f"{dest}{suffix}", "wb") as out:
            for name in names:
                with open(work / f"{name}.{dest}{suffix}", "rb") as shard:
                    shutil.copyfileobj(shard, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    return (out_dir / f"{dest}.bin").stat().st_size // np.dtype(dtype).itemsize


def _cut_by_position(
    work: Path, names: list[str], out_dir: Path, dtype: str, config: DataConfig
) -> dict[str, int]:
    """The single document's tokens (no separator: there is no other document), cut at
    1 - val_fraction."""
    total = _concatenate(work, names, "all", out_dir, False, dtype)
    tokens = np.memmap(out_dir / "all.bin", dtype=dtype, mode="r")
    n_train = int(total * (1.0 - config.val_fraction))
    for dest, (start, stop) in (("train", (0, n_train)), ("val", (n_train, total))):
        with open(out_dir / f"{dest}.bin", "wb") as out:
            for chunk_start in range(start, stop, 1 << 24):
                out.write(tokens[chunk_start : min(stop, chunk_start + (1 << 24))].tobytes())
            out.flush()
            os.fsync(out.fileno())
    del tokens
    (out_dir / "all.bin").unlink()
    return {"train": n_train, "val": total - n_train}


def _val_text_size_by_position(
    work: Path, names: list[str], sizes: list[tuple[int, int]], n_train: int, dtype: str,
    tokenizer: Tokenizer,
) -> tuple[int, int]:  # fmt: skip
    """Characters and bytes of the text after the cut at token `n_train`. Shards wholly after
    the cut were counted while encoding; only the part of the one shard the cut falls into is
    decoded (a shard's ids are its pieces' text, nothing else)."""
    itemsize = np.dtype(dtype).itemsize
    chars = size = start = 0
    for name, (piece_chars, piece_bytes) in zip(names, sizes, strict=True):
        path = work / f"{name}.all.bin"
        stop = start + path.stat().st_size // itemsize
        if start >= n_train:
            chars, size = chars + piece_chars, size + piece_bytes
        elif stop > n_train:
            part_chars, part_bytes = _decoded_size(
                tokenizer, np.fromfile(path, dtype=dtype)[n_train - start : stop - start]
            )
            chars, size = chars + part_chars, size + part_bytes
        start = stop
    return chars, size


def _decoded_size(tokenizer: Tokenizer, ids: np.ndarray) -> tuple[int, int]:
    """Characters and UTF-8 bytes that `ids` decode to, without a Python loop over tokens: a
    char id is one character, whose UTF-8 length follows from its code point."""
    if isinstance(tokenizer, CharTokenizer):
        table = tokenizer.decode(range(tokenizer.vocab_size))  # one character per id
        code_points = np.frombuffer(table.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        lengths = 1 + (code_points >= 0x80) + (code_points >= 0x800) + (code_points >= 0x10000)
        return len(ids), int(lengths[ids].sum())
    text = tokenizer.decode(ids.tolist())
    return len(text), len(text.encode("utf-8", "surrogatepass"))


def load_prepared(directory: Path) -> PreparedData:
    """Read back a directory written by `prepare_dataset`; a meta.json of the wrong types or
    values is one DataError."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{meta_path} does not exist; prepare the data again")
    meta = _read_meta(meta_path)
    try:
        prepared = PreparedData(
            directory=directory,
            train_path=directory / "train.bin",
            val_path=directory / "val.bin",
            tokenizer_path=directory / "tokenizer.json",
            dtype=str(meta["dtype"]),
            vocab_size=_count(meta["vocab_size"]),
            train_tokens=_count(meta["train_tokens"]),
            val_tokens=_count(meta["val_tokens"]),
            source_sha256=str(meta["source_sha256"]),
            has_loss_mask=bool(meta.get("has_loss_mask", False)),
            val_chars=_int_or_none(meta.get("val_chars")),
            val_bytes=_int_or_none(meta.get("val_bytes")),
        )
    except (ValueError, KeyError, TypeError, OverflowError) as err:
        raise DataError(f"{meta_path} is unreadable ({err}); prepare the data again") from None
    if prepared.dtype not in TOKEN_DTYPES or prepared.vocab_size == 0:
        raise DataError(
            f"{meta_path} is unreadable (dtype {prepared.dtype!r}, vocab_size "
            f"{prepared.vocab_size}); prepare the data again"
        )
    return prepared


def _read_meta(path: Path) -> dict[str, Any]:
    data = read_regular_file(path, MAX_META_BYTES, f"{path} is unreadable", DataError)
    try:
        meta = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise DataError(f"{path} is unreadable ({err}); prepare the data again") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} is unreadable (not a JSON object); prepare the data again")
    return meta


def _count(value: Any) -> int:
    """A whole number >= 0 from JSON (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a whole number >= 0")
    return value


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _load_if_complete(
    directory: Path, versions: tuple[int, ...] = (FORMAT_VERSION,)
) -> PreparedData | None:
    """The cached data, if its meta.json is of one of `versions` (by default the current one)
    and the token files have the recorded sizes."""
    try:
        return _check_complete(directory, versions)
    except DataError:
        return None


def _check_complete(directory: Path, versions: tuple[int, ...] = (FORMAT_VERSION,)) -> PreparedData:
    """The prepared data in `directory`, if its meta.json is of one of `versions` and true (the
    token files have the sizes it records); otherwise a DataError that says what is wrong."""
    prepared = load_prepared(directory)
    version = _read_meta(directory / "meta.json").get("format_version")
    if version not in versions:
        raise DataError(
            f"{directory} was prepared by another tinygpt (format {version}, this one reads "
            f"{FORMAT_VERSION}); prepare it again"
        )
    itemsize = np.dtype(prepared.dtype).itemsize
    expected = {
        prepared.train_path: prepared.train_tokens * itemsize,
        prepared.val_path: prepared.val_tokens * itemsize,
    }
    if prepared.has_loss_mask:
        expected[directory / "train.mask.bin"] = prepared.train_tokens
        expected[directory / "val.mask.bin"] = prepared.val_tokens
    for path, size in expected.items():
        found = _size_or_none(path)
        if found != size:
            raise DataError(
                f"{directory} holds incomplete prepared data ({path.name} has "
                f"{'no file' if found is None else f'{found:,} bytes'}, meta.json says "
                f"{size:,}); run tinygpt prepare again"
            )
    if not prepared.tokenizer_path.is_file():
        raise DataError(f"{directory} holds incomplete prepared data (no tokenizer.json)")
    return prepared


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _publish_directory(directory: Path, write: Callable[[Path], None]) -> None:
    """Fill a hidden temp directory, then rename it into place: readers see all files or none."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    temp_dir.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        write(temp_dir)
        fsync_directory(temp_dir)
        if directory.exists():
            if _load_if_complete(directory) is not None:
                return  # another process finished the same data first; its files are identical
            shutil.rmtree(directory)  # an incomplete or outdated leftover
        try:
            os.replace(temp_dir, directory)
        except OSError:
            if _load_if_complete(directory) is None:  # not a concurrent writer winning the race
                raise
            return
        fsync_directory(directory.parent)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
