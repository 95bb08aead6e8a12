"""Text to `train.bin`, `val.bin`, `tokenizer.json` and `meta.json`, cached by content.

Follows nanoGPT's shakespeare_char recipe so that losses compare one to one: the tokenizer is
trained on the whole text, and the split is by position (the first 90% train, the rest val).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt.atomic_files import fsync_directory, write_synced
from tinygpt.config import DataConfig
from tinygpt.data.sources import default_cache_dir, read_source
from tinygpt.errors import DataError
from tinygpt.tokenizers.base import build_tokenizer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the files' layout or meaning changes; old caches are then ignored
MIN_SPLIT_TOKENS = 2  # a split needs at least one (input, target) pair


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
    source_sha256: str


def prepare_dataset(config: DataConfig, cache_dir: Path | None = None) -> PreparedData:
    """Tokenize and split `config.source` once; later calls with the same text reuse the files."""
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    source = read_source(config.source, cache_dir)
    directory = cache_dir / "prepared" / dataset_key(source.sha256, config)
    existing = _load_if_complete(directory)
    if existing is not None:
        logger.info("reusing prepared data in %s", directory)
        return existing

    tokenizer = build_tokenizer(config, source.text)
    tokens = tokenizer.encode_array(source.text)
    train, val = split_tokens(tokens, config.val_fraction)
    dtype = "uint16" if tokenizer.vocab_size <= 1 << 16 else "uint32"
    meta = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype,
        "vocab_size": tokenizer.vocab_size,
        "train_tokens": len(train),
        "val_tokens": len(val),
        "source_sha256": source.sha256,
        "origin": source.origin,
        "tokenizer": tokenizer.kind,
        "unknown_chars": config.unknown_chars,
        "val_fraction": config.val_fraction,
    }

    def write(temp_dir: Path) -> None:
        _write_tokens(temp_dir / "train.bin", train, dtype)
        _write_tokens(temp_dir / "val.bin", val, dtype)
        tokenizer.save(temp_dir / "tokenizer.json")
        _write_meta(temp_dir / "meta.json", meta)

    _publish_directory(directory, write)
    logger.info(
        "prepared %s: %d train and %d val tokens, vocab %d, in %s",
        source.origin,
        len(train),
        len(val),
        tokenizer.vocab_size,
        directory,
    )
    return load_prepared(directory)


def dataset_key(source_sha256: str, config: DataConfig) -> str:
    """Everything that changes the files' content, and nothing else (not the source's path)."""
    identity = {
        "source_sha256": source_sha256,
        "tokenizer": config.tokenizer,
        "unknown_chars": config.unknown_chars,
        "val_fraction": config.val_fraction,
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def split_tokens(tokens: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split as in nanoGPT (`data[:int(n * 0.9)]`), not a shuffle: val is unseen text."""
    n_train = int(len(tokens) * (1.0 - val_fraction))
    train, val = tokens[:n_train], tokens[n_train:]
    if len(train) < MIN_SPLIT_TOKENS or len(val) < MIN_SPLIT_TOKENS:
        raise DataError(
            f"the text has {len(tokens)} tokens, which leaves {len(train)} for training and "
            f"{len(val)} for validation (val_fraction={val_fraction}); each split needs at least "
            f"{MIN_SPLIT_TOKENS}: give more text or change --val_fraction"
        )
    return train, val


def load_prepared(directory: Path) -> PreparedData:
    """Read back a directory written by `prepare_dataset`."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        return PreparedData(
            directory=directory,
            train_path=directory / "train.bin",
            val_path=directory / "val.bin",
            tokenizer_path=directory / "tokenizer.json",
            dtype=str(meta["dtype"]),
            vocab_size=int(meta["vocab_size"]),
            train_tokens=int(meta["train_tokens"]),
            val_tokens=int(meta["val_tokens"]),
            source_sha256=str(meta["source_sha256"]),
        )
    except FileNotFoundError:
        raise DataError(f"{meta_path} does not exist; prepare the data again") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{meta_path} is unreadable ({err}); prepare the data again") from None


def _load_if_complete(directory: Path) -> PreparedData | None:
    """The cached data, if its meta.json is current and the token files have the recorded sizes."""
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            return None
        prepared = load_prepared(directory)
    except (OSError, ValueError, DataError, AttributeError):
        return None
    itemsize = np.dtype(prepared.dtype).itemsize
    sizes_match = (
        _size_or_none(prepared.train_path) == prepared.train_tokens * itemsize
        and _size_or_none(prepared.val_path) == prepared.val_tokens * itemsize
        and prepared.tokenizer_path.is_file()
    )
    return prepared if sizes_match else None


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _write_tokens(path: Path, tokens: np.ndarray, dtype: str) -> None:
    write_synced(path, tokens.astype(np.dtype(dtype).newbyteorder("<")).tobytes())


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    write_synced(path, (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode())


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
