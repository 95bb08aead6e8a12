"""A prepared directory described by its meta.json: `PreparedData`, read back and checked
against the token files' sizes, so a half-written or outdated directory is never used."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt.directories import read_regular_file
from tinygpt.errors import DataError

FORMAT_VERSION = 4  # bump when the files' layout or meaning changes; old caches are then ignored
# versions whose files `--data DIR` still reads: 4 changed only which text a folder of large
# files without separators gives validation
READABLE_FORMAT_VERSIONS = (3, FORMAT_VERSION)
TOKEN_DTYPES = ("uint16", "uint32")  # little-endian on disk
MAX_META_BYTES = 16 << 20  # a meta.json is a few hundred bytes; a link to /dev/zero is endless
# what a prepared directory holds: `prepare --out` may replace a folder of these, nothing else
PREPARED_FILES = (
    "train.bin", "val.bin", "train.mask.bin", "val.mask.bin", "tokenizer.json", "meta.json"
)  # fmt: skip


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


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def load_prepared(directory: Path) -> PreparedData:
    """Read back a directory written by `prepare_dataset`; a meta.json of the wrong types or
    values is one DataError."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{meta_path} does not exist; prepare the data again")
    meta = read_meta(meta_path)
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


def read_meta(path: Path) -> dict[str, Any]:
    data = read_regular_file(path, MAX_META_BYTES, f"{path} is unreadable", DataError)
    try:
        meta = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise DataError(f"{path} is unreadable ({err}); prepare the data again") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} is unreadable (not a JSON object); prepare the data again")
    return meta


def meta_bytes(meta: dict[str, Any]) -> bytes:
    return (json.dumps(meta, indent=1) + "\n").encode()


def load_if_complete(
    directory: Path, versions: tuple[int, ...] = (FORMAT_VERSION,)
) -> PreparedData | None:
    """The cached data, if its meta.json is of one of `versions` (by default the current one)
    and the token files have the recorded sizes."""
    try:
        return check_complete(directory, versions)
    except DataError:
        return None


def check_complete(directory: Path, versions: tuple[int, ...] = (FORMAT_VERSION,)) -> PreparedData:
    """The prepared data in `directory`, if its meta.json is of one of `versions` and true (the
    token files have the sizes it records); otherwise a DataError that says what is wrong."""
    prepared = load_prepared(directory)
    version = read_meta(directory / "meta.json").get("format_version")
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


def _count(value: Any) -> int:
    """A whole number >= 0 from JSON (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a whole number >= 0")
    return value


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
