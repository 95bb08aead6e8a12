"""Character-level tokenizer: one id per Unicode code point, as in nanoGPT's shakespeare_char.

The vocabulary is the sorted set of the training text's characters, so on TinyShakespeare the ids
are exactly nanoGPT's (65 characters, "\\n" = 0, " " = 1, ...) and results compare one to one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from tinygpt.errors import DataError
from tinygpt.tokenizers.base import Tokenizer

UnknownPolicy = Literal["error", "unk"]

UNK_TOKEN = "<unk>"
REPLACEMENT_CHAR = "\ufffd"  # what the unk id decodes to: Unicode's "unrepresentable character"
MAX_NAMED_CHARS = 10  # unknown characters named in an error message


class CharTokenizer(Tokenizer):
    """Characters to ids; with policy "unk" one extra id, the last, stands for any other char."""

    kind = "char"

    def __init__(self, chars: Sequence[str], unknown_chars: UnknownPolicy = "error") -> None:
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("every vocabulary entry must be a single character")
        if any(a >= b for a, b in itertools.pairwise(chars)):
            # encode_array binary-searches the code points, which needs them sorted and unique
            raise ValueError("vocabulary characters must be sorted and unique")
        if unknown_chars not in ("error", "unk"):
            raise ValueError(f"unknown_chars={unknown_chars!r} is not one of error, unk")
        self.chars: tuple[str, ...] = tuple(chars)
        self.unknown_chars: UnknownPolicy = unknown_chars
        self.unk_id: int | None = len(chars) if unknown_chars == "unk" else None
        self._ids = {c: i for i, c in enumerate(chars)}
        self._code_points = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._decode_table = [*chars, REPLACEMENT_CHAR] if self.unk_id is not None else list(chars)

    @classmethod
    def train(cls, text: str, unknown_chars: UnknownPolicy = "error") -> CharTokenizer:
        if not text:
            raise DataError("cannot build a character vocabulary from empty text; give some text")
        return cls(sorted(set(text)), unknown_chars)

    @property
    def vocab_size(self) -> int:
        return len(self._decode_table)

    def encode(self, text: str) -> list[int]:
        ids = self._ids
        if self.unk_id is None:
            try:
                return [ids[c] for c in text]
            except KeyError:
                raise self._unknown_chars_error(c for c in text if c not in ids) from None
        unk_id = self.unk_id
        return [ids.get(c, unk_id) for c in text]

    def encode_array(self, text: str) -> np.ndarray:
        # UTF-32 gives one uint32 per code point with no Python loop; surrogatepass keeps lone
        # surrogates (legal in str) as code points, so they are reported instead of crashing.
        code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        if not len(self._code_points):
            positions = np.zeros(len(code_points), dtype=np.int64)
            is_known = np.zeros(len(code_points), dtype=bool)
        else:
            positions = np.searchsorted(self._code_points, code_points).astype(np.int64)
            clipped = np.minimum(positions, len(self._code_points) - 1)
            is_known = self._code_points[clipped] == code_points
        if not is_known.all():
            if self.unk_id is None:
                unknown = np.unique(code_points[~is_known])
                raise self._unknown_chars_error(chr(c) for c in unknown[: MAX_NAMED_CHARS + 1])
            positions[~is_known] = self.unk_id
        return positions

    def decode(self, ids: Sequence[int]) -> str:
        table = self._decode_table
        values = [int(i) for i in ids]  # also accepts numpy arrays and 1-D tensors
        # checked explicitly: a negative id would otherwise silently index from the end
        if values and (min(values) < 0 or max(values) >= len(table)):
            raise DataError(
                f"token ids must be in 0..{len(table) - 1} for this {len(table)}-token vocabulary; "
                "the checkpoint and tokenizer do not match"
            )
        return "".join([table[i] for i in values])

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "kind": self.kind,
            "version": 1,
            "chars": list(self.chars),
            "unknown_chars": self.unknown_chars,
        }
        if self.unk_id is not None:  # for people reading the file; from_dict ignores it
            document["unk_token"] = {"id": self.unk_id, "text": UNK_TOKEN}
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> CharTokenizer:
        if document.get("kind") != cls.kind:
            raise ValueError(f"kind is {document.get('kind')!r}, expected {cls.kind!r}")
        chars = document["chars"]
        if not isinstance(chars, list):
            raise TypeError("chars must be a list of strings")
        return cls(chars, document.get("unknown_chars", "error"))

    def _unknown_chars_error(self, unknown: Iterable[str]) -> DataError:
        named = sorted(set(unknown))
        listed = ", ".join(repr(c) for c in named[:MAX_NAMED_CHARS])
        if len(named) > MAX_NAMED_CHARS:
            listed += ", ..."
        return DataError(
            f"text has characters outside the vocabulary: {listed}; "
            "train on text that contains them or set --unknown_chars unk"
        )
