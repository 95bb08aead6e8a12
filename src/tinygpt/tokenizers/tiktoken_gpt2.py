"""GPT-2's 50,257-token byte-level BPE through `tiktoken`, so ids match GPT-2 checkpoints.

The merges come from a folder holding GPT-2's `encoder.json` and `vocab.bpe` (offline), else from
tiktoken's download, and are saved in tokenizer.json itself: a run or prepared folder then needs
neither the folder nor the network. Only `vocab.bpe` is kept (its lines, 0.7 MB of JSON):
`encoder.json` follows from it. It is checked against the sha256 of OpenAI's file, so an edited
tokenizer.json cannot pass for GPT-2's. An older tokenizer.json, which named the folder
("bpe_dir"), still loads from that folder or the same files found another way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
from tiktoken.load import read_file_cached

from tinygpt.errors import CheckpointError, DataError
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.tokenizers.bpe import checked_ids, cpu_threads, encode_in_chunks

BPE_DIR_ENV = "TINYGPT_GPT2_BPE_DIR"
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
VOCAB_SIZE = 50257
PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# sha256 of OpenAI's released files; tiktoken refuses files that differ
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
FIX = f"set --gpt2_bpe_dir or {BPE_DIR_ENV} to a folder with GPT-2's encoder.json and vocab.bpe"


class GPT2Tokenizer(Tokenizer):
    """GPT-2's tokenizer; "<|endoftext|>" in text is ordinary text, only id 50256 is the token."""

    kind = "gpt2"

    def __init__(self, vocab_bpe: bytes) -> None:
        """`vocab_bpe`: the bytes of OpenAI's vocab.bpe; a ValueError for any other file."""
        if _sha256(vocab_bpe) != VOCAB_BPE_SHA256:
            raise ValueError("vocab_bpe is not GPT-2's vocab.bpe (its sha256 differs)")
        self.vocab_bpe = vocab_bpe
        self._encoding = _encoding(vocab_bpe)

    @classmethod
    def load(cls, bpe_dir: str = "") -> GPT2Tokenizer:
        """From `bpe_dir`, else the folder in $TINYGPT_GPT2_BPE_DIR, else tiktoken's download."""
        if bpe_dir:
            return cls(_vocab_bpe_in(bpe_dir, "--gpt2_bpe_dir"))
        if os.environ.get(BPE_DIR_ENV):
            return cls(_vocab_bpe_in(os.environ[BPE_DIR_ENV], BPE_DIR_ENV))
        try:
            return cls(read_file_cached(VOCAB_BPE_URL, VOCAB_BPE_SHA256))
        except (OSError, ValueError, ImportError) as err:  # requests' errors are OSErrors
            raise DataError(f"could not download GPT-2's BPE files ({err}); {FIX}") from None

    @classmethod
    def from_openai_files(cls, encoder_json: bytes, vocab_bpe: bytes) -> GPT2Tokenizer | None:
        """GPT-2's tokenizer if these are OpenAI's two files (as Hugging Face's vocab.json and
        merges.txt), else None."""
        return cls(vocab_bpe) if _are_openai_files(encoder_json, vocab_bpe) else None

    def openai_files(self) -> tuple[bytes, bytes]:
        """OpenAI's encoder.json and vocab.bpe, byte for byte (Hugging Face's vocab.json and
        merges.txt): encoder.json maps each token's symbols to its rank, in rank order."""
        symbols = [symbol for symbol, _ in _BYTE_SYMBOLS]
        symbols += ["".join(pair) for pair in merge_pairs(self.vocab_bpe)]
        encoder = {symbol: rank for rank, symbol in enumerate(symbols)} | {EOT_TOKEN: EOT_ID}
        return json.dumps(encoder).encode(), self.vocab_bpe

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        return encode_in_chunks(self.encode_batch, text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._encoding.encode_ordinary_batch(list(texts), num_threads=cpu_threads())

    def decode(self, ids: Sequence[int]) -> str:
        return self._encoding.decode(checked_ids(ids, VOCAB_SIZE))

    @property
    def special_tokens(self) -> dict[str, int]:
        return {EOT_TOKEN: EOT_ID}

    @property
    def eot_id(self) -> int:
        return EOT_ID

    def to_dict(self) -> dict[str, Any]:
        # one JSON string per line of vocab.bpe: readable, and the file again when joined
        return {"kind": self.kind, "vocab_bpe": self.vocab_bpe.decode("utf-8").splitlines()}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> GPT2Tokenizer:
        if document.get("kind") != cls.kind:
            raise ValueError(f"kind is {document.get('kind')!r}, expected {cls.kind!r}")
        lines = document.get("vocab_bpe")
        if lines is not None:
            if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
                raise TypeError("vocab_bpe must be a list of strings")
            return cls("".join(f"{line}\n" for line in lines).encode("utf-8"))
        return _from_folder_name(document.get("bpe_dir"))


def _from_folder_name(bpe_dir: Any) -> GPT2Tokenizer:
    """The tokenizer.json of tinygpt before the merges were saved in it: the folder it names,
    else the same files found another way (the environment, tiktoken's download)."""
    if not isinstance(bpe_dir, str):
        raise TypeError("a gpt2 tokenizer needs vocab_bpe (a list of strings)")
    if bpe_dir and Path(bpe_dir).is_dir():
        return GPT2Tokenizer.load(bpe_dir)
    try:
        return GPT2Tokenizer.load()
    except DataError as err:
        if not bpe_dir:
            raise
        raise CheckpointError(
            f"the GPT-2 BPE folder {bpe_dir} named in tokenizer.json is gone, and {err}"
        ) from None


def _vocab_bpe_in(folder: str, origin: str) -> bytes:
    """vocab.bpe of a folder that holds OpenAI's two files (encoder.json is checked too, so a
    folder of another BPE is refused rather than half used)."""
    path = Path(folder).expanduser()
    try:
        encoder_json = (path / "encoder.json").read_bytes()
        vocab_bpe = (path / "vocab.bpe").read_bytes()
    except FileNotFoundError:
        raise DataError(f"{origin}={folder} has no encoder.json and vocab.bpe; {FIX}") from None
    except OSError as err:
        raise DataError(f"{origin}={folder} cannot be read ({err}); {FIX}") from None
    if not _are_openai_files(encoder_json, vocab_bpe):
        raise DataError(
            f"{origin}={folder} does not hold GPT-2's BPE files (their sha256 differs from "
            "OpenAI's); give the folder of the original encoder.json and vocab.bpe"
        )
    return vocab_bpe


def _are_openai_files(encoder_json: bytes, vocab_bpe: bytes) -> bool:
    is_encoder = _sha256(encoder_json) == ENCODER_JSON_SHA256
    return is_encoder and _sha256(vocab_bpe) == VOCAB_BPE_SHA256


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _byte_symbols() -> list[tuple[str, int]]:
    """GPT-2's stand-in character for each byte, in rank order: printable bytes stand for
    themselves, the others (space, controls, ...) for characters from U+0100 on."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    others = [b for b in range(256) if b not in printable]
    return [(chr(b), b) for b in printable] + [(chr(256 + n), b) for n, b in enumerate(others)]


_BYTE_SYMBOLS = _byte_symbols()


def merge_pairs(vocab_bpe: bytes) -> list[tuple[str, str]]:
    """vocab.bpe's merges in rank order: every line after the version line is "first second"
    (some start with "#" too: "# #" is the merge that makes "##")."""
    lines = vocab_bpe.decode("utf-8").split("\n")[1:]
    return [tuple(line.split(" ")) for line in lines if line]  # type: ignore[misc]


@functools.lru_cache(maxsize=1)
def _encoding(vocab_bpe: bytes) -> tiktoken.Encoding:
    """tiktoken's encoding, built offline; cached because there is only one (the bytes are
    checked to be OpenAI's) and building its 50,000 merges takes a while."""
    symbol_bytes = {symbol: byte for symbol, byte in _BYTE_SYMBOLS}
    ranks = {bytes([byte]): rank for rank, (_, byte) in enumerate(_BYTE_SYMBOLS)}
    for first, second in merge_pairs(vocab_bpe):
        ranks[bytes(symbol_bytes[s] for s in first + second)] = len(ranks)
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
    )
