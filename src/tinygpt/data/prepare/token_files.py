"""The final files: encoded shards concatenated into `train.bin` and `val.bin` (+ loss masks),
beside `tokenizer.json` and `meta.json`, in a temporary directory renamed into place, so a
reader sees complete prepared data or none."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt.atomic_files import publish_directory, write_synced
from tinygpt.config import DataConfig
from tinygpt.data.prepare.encoding import TextSizes
from tinygpt.data.prepare.meta import (
    FORMAT_VERSION,
    load_if_complete,
    meta_bytes,
    token_dtype,
)
from tinygpt.data.prepare.splitting import SplitPlan
from tinygpt.data.sources import Corpus
from tinygpt.errors import DataError
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.tokenizers.char import CharTokenizer

MIN_SPLIT_TOKENS = 2  # a split needs at least one (input, target) pair
COPY_CHUNK_BYTES = 1 << 20
CUT_CHUNK_TOKENS = 1 << 24


def write_token_files(
    directory: Path,
    work: Path,
    streams: dict[str, list[str]],
    text_sizes: TextSizes,
    tokenizer: Tokenizer,
    corpus: Corpus,
    config: DataConfig,
    plan: SplitPlan,
) -> dict[str, Any]:
    """Publish `directory` from the shards in `work`; returns its meta.json. Where another
    process published complete data there first, its files (the same) are kept."""
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
            counts = cut_by_position(work, streams["all"], temp_dir, dtype, config)
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
        write_synced(temp_dir / "meta.json", meta_bytes(meta))

    # an existing directory is incomplete or outdated (the caller checked under the lock) unless
    # another process finished the same data since: its files are identical, so it is kept
    publish_directory(
        directory, write, keep_existing=lambda found: load_if_complete(found) is not None
    )
    return meta


def cut_by_position(
    work: Path, names: list[str], out_dir: Path, dtype: str, config: DataConfig
) -> dict[str, int]:
    """The single document's tokens (no separator: there is no other document), cut at
    1 - val_fraction."""
    total = _concatenate(work, names, "all", out_dir, False, dtype)
    tokens = np.memmap(out_dir / "all.bin", dtype=dtype, mode="r")
    n_train = int(total * (1.0 - config.val_fraction))
    for dest, (start, stop) in (("train", (0, n_train)), ("val", (n_train, total))):
        with open(out_dir / f"{dest}.bin", "wb") as out:
            for chunk_start in range(start, stop, CUT_CHUNK_TOKENS):
                out.write(tokens[chunk_start : min(stop, chunk_start + CUT_CHUNK_TOKENS)].tobytes())
            out.flush()
            os.fsync(out.fileno())
    del tokens
    (out_dir / "all.bin").unlink()
    return {"train": n_train, "val": total - n_train}


def _concatenate(
    work: Path, names: list[str], dest: str, out_dir: Path, has_mask: bool, dtype: str
) -> int:
    suffixes = [".bin", ".mask.bin"] if has_mask else [".bin"]
    for suffix in suffixes:
        with open(out_dir / f"{dest}{suffix}", "wb") as out:
            for name in names:
                with open(work / f"{name}.{dest}{suffix}", "rb") as shard:
                    shutil.copyfileobj(shard, out, COPY_CHUNK_BYTES)
            out.flush()
            os.fsync(out.fileno())
    return (out_dir / f"{dest}.bin").stat().st_size // np.dtype(dtype).itemsize


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
