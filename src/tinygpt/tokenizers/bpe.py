"""Byte-level BPE trained on the corpus with Hugging Face `tokenizers`: GPT-2's scheme, own merges.

All 256 byte values are tokens, so any Unicode text round-trips exactly and no id means "unknown".
The Rust library trains and encodes on every core.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tinygpt.errors import DataError
from tinygpt.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)

EOT_TOKEN = "<|endoftext|>"
# ids 0..5 in this order; the dialog markers are the chat format's (data/chat_format.py)
# `<s> User: ... <sep> Bot: ... </s>`
SPECIAL_TOKENS = (EOT_TOKEN, "<s>", "</s>", "<sep>", "<pad>", "<unk>")
# encode_array's pieces: all three libraries encode 32k-character pieces 2-4x faster than one
# long string (measured on TinyStories), and a 2 MB text still spreads over every core
CHUNK_CHARS = 1 << 15
BATCH_CHUNKS = 256  # pieces encoded at once: bounds the Python lists alive to ~8 MB of text


class BPETokenizer(Tokenizer):
    """Byte-level BPE; special tokens are never matched in text, only inserted by id."""

    kind = "bpe"

    def __init__(self, tokenizer: HFTokenizer) -> None:
        # Hugging Face matches added tokens inside text by default, which would let user text
        # inject "<|endoftext|>" or "<s>"; with this set they are encoded as ordinary bytes.
        tokenizer.encode_special_tokens = True
        special = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        missing = [token for token, token_id in special.items() if token_id is None]
        if missing:
            raise ValueError(f"the BPE vocabulary lacks the special tokens {missing}")
        self._tokenizer = tokenizer
        self._special_tokens: dict[str, int] = special  # type: ignore[assignment]

    @classmethod
    def train(cls, documents: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Learn merges from a stream of documents, which are cut where pre-tokenization is
        unaffected, so a document larger than memory allows is never handed over whole."""
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
            show_progress=sys.stderr.isatty(),
        )
        pieces = (piece for document in documents for piece in split_text(document))
        tokenizer.train_from_iterator(pieces, trainer=trainer)
        if tokenizer.get_vocab_size() < vocab_size:
            logger.warning(
                "BPE found only %d tokens in this text (asked for %d); using %d",
                tokenizer.get_vocab_size(),
                vocab_size,
                tokenizer.get_vocab_size(),
            )
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        return encode_in_chunks(self.encode_batch, text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # the _fast variant skips character offsets, which we never use
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(checked_ids(ids, self.vocab_size), skip_special_tokens=False)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_tokens)

    @property
    def eot_id(self) -> int:
        return self._special_tokens[EOT_TOKEN]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "hf_tokenizer": json.loads(self._tokenizer.to_str())}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> BPETokenizer:
        if document.get("kind") != cls.kind:
            raise ValueError(f"kind is {document.get('kind')!r}, expected {cls.kind!r}")
        hf_tokenizer = document.get("hf_tokenizer")
        if not isinstance(hf_tokenizer, dict):
            raise TypeError("hf_tokenizer must be a JSON object")
        return cls(hf_tokenizer_from_json(hf_tokenizer))


def hf_tokenizer_from_json(document: dict[str, Any]) -> HFTokenizer:
    """A Hugging Face tokenizer from its tokenizer.json object; a ValueError if malformed. The
    Rust library raises a bare Exception, and panics (a BaseException, a backtrace on stderr)
    on a BPE merge whose result the vocabulary lacks, so merges are checked here first."""
    model = document.get("model")
    if isinstance(model, dict) and model.get("type") == "BPE":
        _check_merges(model)
    try:
        return HFTokenizer.from_str(json.dumps(document))
    except Exception as err:
        raise ValueError(f"not a Hugging Face tokenizer: {err}") from None
    except BaseException as err:  # pyo3's PanicException, for a case _check_merges misses
        if type(err).__name__ != "PanicException":
            raise
        raise ValueError(f"not a Hugging Face tokenizer: {err}") from None


def _check_merges(model: dict[str, Any]) -> None:
    """Each merge of a plain BPE (no word prefixes or suffixes) makes a token of the vocabulary."""
    vocab, merges = model.get("vocab"), model.get("merges")
    has_affixes = model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
    if not isinstance(vocab, dict) or not isinstance(merges, list) or has_affixes:
        return  # the library's own checks name what is wrong
    for merge in merges:
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not isinstance(pair, list) or len(pair) != 2:
            continue
        first, second = pair
        if isinstance(first, str) and isinstance(second, str) and first + second not in vocab:
            raise ValueError(f"the merge '{first} {second}' makes a token the vocabulary lacks")


def split_text(text: str, chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """Cut `text` into pieces of about `chunk_chars`, only at a newline between two non-space
    characters. GPT-2's pre-tokenizer always makes such a newline a token of its own, so the
    pieces encode to exactly the ids of the whole (sentencepiece never merges across a newline
    either). A text with no such newline stays whole."""
    start, search = 0, chunk_chars
    while search < len(text):
        cut = text.find("\n", search)
        if cut == -1 or cut + 1 == len(text):
            break
        if text[cut - 1].isspace() or text[cut + 1].isspace():
            search = cut + 1  # part of a longer whitespace run, which the regex splits otherwise
            continue
        yield text[start : cut + 1]
        start, search = cut + 1, cut + 1 + chunk_chars
    yield text[start:]


def encode_in_chunks(
    encode_batch: Callable[[Sequence[str]], list[list[int]]],
    text: str,
    chunk_chars: int = CHUNK_CHARS,
) -> np.ndarray:
    """Encode a whole corpus with a native batch encoder: its pieces run on every core, and only
    one batch of Python int lists (about 36 bytes a token) is alive at a time."""
    pieces = split_text(text, chunk_chars)
    arrays = [np.zeros(0, dtype=np.int64)]
    while batch := list(itertools.islice(pieces, BATCH_CHUNKS)):
        arrays.extend(np.asarray(ids, dtype=np.int64) for ids in encode_batch(batch))
    return np.concatenate(arrays)


def checked_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    """Plain ints in range: the native decoders reject numpy ints or skip unknown ids silently."""
    values = [int(i) for i in ids]  # also accepts numpy arrays and 1-D tensors
    if values and (min(values) < 0 or max(values) >= vocab_size):
        raise DataError(
            f"token ids must be in 0..{vocab_size - 1} for this {vocab_size}-token vocabulary; "
            "the checkpoint and tokenizer do not match"
        )
    return values


def cpu_threads() -> int:
    """Threads for the native batch encoders."""
    return os.cpu_count() or 1
