"""The tokenizer interface, and tokenizers as JSON files beside prepared data and checkpoints.

A tokenizer is saved as plain JSON (never pickled) so that a checkpoint can be inspected, shared
and loaded without running code from it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt.atomic_files import write_text_atomic
from tinygpt.config import DataConfig
from tinygpt.errors import CheckpointError, ConfigError


class Tokenizer(ABC):
    """Maps text to token ids and back."""

    kind: str = ""  # stored in tokenizer.json so that load_tokenizer knows which class to build

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, so every id is in range(vocab_size); the model's embedding size."""

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def encode_array(self, text: str) -> np.ndarray:
        """Encode to int64 ids. Subclasses vectorise this: it encodes whole corpora."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts; tokenizers with a native multi-threaded batch encoder use it."""
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token strings and their ids (e.g. {"<|endoftext|>": 50256}); never produced
        by `encode` from ordinary text, only inserted by code that means them."""
        return {}

    @property
    def eot_id(self) -> int | None:
        """The end-of-text id that separates documents, or None if the vocabulary has none."""
        return None

    def document_separator(self) -> list[int]:
        """Ids placed between two documents: the end-of-text token, else a blank line."""
        return [self.eot_id] if self.eot_id is not None else self.encode("\n\n")

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, including "kind", that `from_dict` turns back into self."""

    @classmethod
    @abstractmethod
    def from_dict(cls, document: dict[str, Any]) -> Tokenizer:
        """Rebuild from `to_dict`; raise ValueError, KeyError or TypeError if it is malformed."""

    def to_json(self) -> str:
        """The text of tokenizer.json."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"

    def save(self, path: Path) -> None:
        """Write JSON atomically, so a kill mid-write never leaves a truncated tokenizer.json."""
        write_text_atomic(Path(path), self.to_json())


def tokenizer_classes() -> dict[str, type[Tokenizer]]:
    """Every tokenizer kind; imported here, not at module level, because they import this module."""
    from tinygpt.tokenizers.bpe import BPETokenizer
    from tinygpt.tokenizers.char import CharTokenizer
    from tinygpt.tokenizers.sentencepiece_bpe import SentencePieceTokenizer
    from tinygpt.tokenizers.tiktoken_gpt2 import GPT2Tokenizer

    classes = (CharTokenizer, BPETokenizer, SentencePieceTokenizer, GPT2Tokenizer)
    return {cls.kind: cls for cls in classes}


def load_tokenizer(path: Path) -> Tokenizer:
    """Read a tokenizer.json written by `Tokenizer.save`."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"tokenizer file {path} does not exist; prepare the data or train again to create it"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"tokenizer file {path} is not readable JSON ({err}); prepare the data again"
        ) from None
    kind = document.get("kind") if isinstance(document, dict) else None
    classes = tokenizer_classes()
    if kind not in classes:
        raise CheckpointError(
            f"tokenizer file {path} has unknown kind {kind!r} (known: {', '.join(classes)}); "
            "it was written by another tool or a newer tinygpt"
        )
    try:
        return classes[kind].from_dict(document)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"tokenizer file {path} is malformed ({err}); prepare the data again"
        ) from None


def build_tokenizer(config: DataConfig, documents: Callable[[], Iterable[str]]) -> Tokenizer:
    """Train the tokenizer that `config` asks for on the corpus.

    `documents()` returns a fresh iterator over the training documents: a corpus may not fit in
    memory, so trainers stream it (and a trainer that needs two passes calls it twice).
    """
    from tinygpt.tokenizers.bpe import BPETokenizer
    from tinygpt.tokenizers.char import CharTokenizer
    from tinygpt.tokenizers.sentencepiece_bpe import SentencePieceTokenizer
    from tinygpt.tokenizers.tiktoken_gpt2 import GPT2Tokenizer

    if config.tokenizer == "char":
        chars: set[str] = set()
        for document in documents():
            chars.update(document)
        return CharTokenizer.train("".join(sorted(chars)), unknown_chars=config.unknown_chars)
    if config.tokenizer == "bpe":
        return BPETokenizer.train(documents(), config.tokenizer_vocab_size)
    if config.tokenizer == "sentencepiece":
        return SentencePieceTokenizer.train(documents(), config.tokenizer_vocab_size)
    if config.tokenizer == "gpt2":
        return GPT2Tokenizer.load(config.gpt2_bpe_dir)  # pretrained: the corpus is not read
    raise ConfigError(
        f"tokenizer={config.tokenizer!r} is not one of char, bpe, sentencepiece, gpt2"
    )


class StreamDecoder:
    """Turns ids arriving one at a time into text pieces that are safe to print.

    A byte-level token can end in the middle of a UTF-8 character, so decoding each id alone
    would print replacement characters; the ids not yet released are decoded together, and
    released once their text ends in a whole character. Every tokenizer here decodes as the
    concatenation of its tokens' bytes, so those ids decode alone to exactly the text they add
    to the whole, and a token costs the same however long the text (tested on arbitrary ids:
    the pieces join to `tokenizer.decode(all ids)`).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.pending: list[int] = []  # ids whose text is not released yet

    def push(self, token_id: int) -> str:
        self.pending.append(token_id)
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd"):
            return ""  # a character still incomplete (or an invalid byte, released later)
        self.pending = []
        return text

    def flush(self) -> str:
        """Whatever is left at the end, incomplete characters included."""
        text = self.tokenizer.decode(self.pending)
        self.pending = []
        return text
