"""GPT-2's 50,257-token byte-level BPE through `tiktoken`, so ids match GPT-2 checkpoints.

The merges come from a folder holding GPT-2's `encoder.json` and `vocab.bpe` (offline), else from
tiktoken's download. Only the folder's path is saved: the 1.5 MB of merges are not copied into
every tokenizer.json.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

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
FIX = f"set --gpt2_bpe_dir or {BPE_DIR_ENV} to a folder with GPT-2's encoder.json and vocab.bpe"


class GPT2Tokenizer(Tokenizer):
    """GPT-2's tokenizer; "<|endoftext|>" in text is ordinary text, only id 50256 is the token."""

    kind = "gpt2"

    def __init__(self, encoding: tiktoken.Encoding, bpe_dir: str = "") -> None:
        self._encoding = encoding
        self.bpe_dir = bpe_dir  # "" when tiktoken downloaded the files

    @classmethod
    def load(cls, bpe_dir: str = "") -> GPT2Tokenizer:
        """From `bpe_dir`, else the folder in $TINYGPT_GPT2_BPE_DIR, else tiktoken's download."""
        if bpe_dir:
            return cls(_encoding_from_folder(bpe_dir, "--gpt2_bpe_dir"), _absolute(bpe_dir))
        if os.environ.get(BPE_DIR_ENV):
            folder = os.environ[BPE_DIR_ENV]
            return cls(_encoding_from_folder(folder, BPE_DIR_ENV), _absolute(folder))
        try:
            return cls(tiktoken.get_encoding("gpt2"))
        except (OSError, ValueError, ImportError) as err:  # requests' errors are OSErrors
            raise DataError(f"could not download GPT-2's BPE files ({err}); {FIX}") from None

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
        return {"kind": self.kind, "bpe_dir": self.bpe_dir}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> GPT2Tokenizer:
        if document.get("kind") != cls.kind:
            raise ValueError(f"kind is {document.get('kind')!r}, expected {cls.kind!r}")
        bpe_dir = document.get("bpe_dir")
        if not isinstance(bpe_dir, str):
            raise TypeError("bpe_dir must be a string")
        if bpe_dir and Path(bpe_dir).is_dir():
            return cls.load(bpe_dir)
        try:  # the folder moved, or was never used: same files, found another way
            return cls.load()
        except DataError as err:
            if not bpe_dir:
                raise
            raise CheckpointError(
                f"the GPT-2 BPE folder {bpe_dir} named in tokenizer.json is gone, and {err}"
            ) from None


def _absolute(folder: str) -> str:
    return str(Path(folder).expanduser().resolve())


@functools.cache
def _encoding_from_folder(folder: str, origin: str) -> tiktoken.Encoding:
    """Build the encoding offline; cached because reading 50,000 merges takes a while."""
    path = Path(folder).expanduser()
    if not (path / "encoder.json").is_file() or not (path / "vocab.bpe").is_file():
        raise DataError(f"{origin}={folder} has no encoder.json and vocab.bpe; {FIX}")
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(path / "vocab.bpe"),
            encoder_json_file=str(path / "encoder.json"),
            vocab_bpe_hash=VOCAB_BPE_SHA256,
            encoder_json_hash=ENCODER_JSON_SHA256,
        )
    except (OSError, ValueError) as err:
        raise DataError(f"{origin}={folder} does not hold GPT-2's BPE files ({err})") from None
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
    )
