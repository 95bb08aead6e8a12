"""SentencePiece BPE with byte fallback, trained on the corpus (the tokenizer of the dialog-chatbot
spec, docs/specs.md).

Identity normalization, no dummy prefix and kept whitespace make decode(encode(text)) == text for
any text: characters outside the vocabulary fall back to their UTF-8 bytes. SentencePiece writes a
space as U+2581 ("▁"), so a literal U+2581 in the text is encoded as its three byte tokens instead.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import sentencepiece as spm

from tinygpt.errors import DataError
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.tokenizers.bpe import checked_ids, cpu_threads, encode_in_chunks

PAD, UNK, BOS, EOS, SEP = "<pad>", "<unk>", "<s>", "</s>", "<sep>"
# The chat format (data/chat_format.py) is `<s> User: ... <sep> Bot: ... </s>`. <sep> is a control
# symbol, like <s> and </s>, so that its id is fixed (the first after those four) and text never
# produces it.
SPECIAL_TOKENS = {PAD: 0, UNK: 1, BOS: 2, EOS: 3, SEP: 4}
SPACE_PIECE = "\u2581"
MAX_SENTENCE_CHARS = 1 << 14  # longer lines are cut: sentencepiece would skip them whole
INPUT_SENTENCES = 2_000_000  # a uniform sample of this many lines bounds training memory


class SentencePieceTokenizer(Tokenizer):
    """A serialized SentencePiece model; decoding is done here, byte by byte, so that a piece
    ending inside a UTF-8 character decodes to one replacement character, as StreamDecoder needs."""

    kind = "sentencepiece"

    def __init__(self, model: bytes) -> None:
        try:
            processor = spm.SentencePieceProcessor(model_proto=model)
        except RuntimeError as err:
            raise ValueError(f"not a SentencePiece model ({err})") from None
        ids = {token: processor.piece_to_id(token) for token in SPECIAL_TOKENS}
        if ids != SPECIAL_TOKENS:
            raise ValueError(f"special tokens have ids {ids}, expected {SPECIAL_TOKENS}")
        self._model = model
        self._processor = processor
        self._piece_bytes = [_piece_bytes(processor, i) for i in range(processor.get_piece_size())]
        self._space_char_ids = [processor.piece_to_id(f"<0x{b:02X}>") for b in SPACE_PIECE.encode()]

    @classmethod
    def train(cls, documents: Iterable[str], vocab_size: int) -> SentencePieceTokenizer:
        model = io.BytesIO()
        failures: list[Exception] = []  # sentencepiece turns an iterator's error into RuntimeError
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_sentences(documents, failures),
                model_writer=model,
                vocab_size=vocab_size,
                **_trainer_options(),
            )
        except RuntimeError as err:
            if failures:
                raise failures[0] from None
            raise _training_error(err, vocab_size) from None
        if failures:
            raise failures[0]
        try:
            tokenizer = cls(model.getvalue())
        except ValueError as err:
            raise DataError(f"sentencepiece made an unusable model: {err}") from None
        if tokenizer.vocab_size != vocab_size:
            raise _too_few_pieces(tokenizer.vocab_size)
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self._piece_bytes)

    def encode(self, text: str) -> list[int]:
        if SPACE_PIECE not in text:
            return self._processor.encode(text)
        ids: list[int] = []
        for index, part in enumerate(text.split(SPACE_PIECE)):
            if index:
                ids.extend(self._space_char_ids)
            ids.extend(self._processor.encode(part))
        return ids

    def encode_array(self, text: str) -> np.ndarray:
        return encode_in_chunks(self.encode_batch, text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        batch = self._processor.encode(texts, num_threads=cpu_threads())
        # the rare text with a literal U+2581 is encoded again, the slow way
        pairs = zip(texts, batch, strict=True)
        return [self.encode(text) if SPACE_PIECE in text else ids for text, ids in pairs]

    def decode(self, ids: Sequence[int]) -> str:
        table = self._piece_bytes
        data = b"".join([table[i] for i in checked_ids(ids, len(table))])
        return data.decode("utf-8", errors="replace")

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(SPECIAL_TOKENS)

    @property
    def eot_id(self) -> int:
        return SPECIAL_TOKENS[EOS]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": base64.b64encode(self._model).decode("ascii")}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> SentencePieceTokenizer:
        if document.get("kind") != cls.kind:
            raise ValueError(f"kind is {document.get('kind')!r}, expected {cls.kind!r}")
        model = document.get("model")
        if not isinstance(model, str):
            raise TypeError("model must be a base64 string")
        return cls(base64.b64decode(model, validate=True))


def _trainer_options() -> dict[str, Any]:
    return {
        "model_type": "bpe",
        "pad_id": SPECIAL_TOKENS[PAD],
        "pad_piece": PAD,
        "unk_id": SPECIAL_TOKENS[UNK],
        "unk_piece": UNK,
        "bos_id": SPECIAL_TOKENS[BOS],
        "bos_piece": BOS,
        "eos_id": SPECIAL_TOKENS[EOS],
        "eos_piece": EOS,
        "control_symbols": [SEP],
        "byte_fallback": True,
        "normalization_rule_name": "identity",  # no NFKC: text must come back unchanged
        "add_dummy_prefix": False,
        "remove_extra_whitespaces": False,
        "allow_whitespace_only_pieces": True,
        "split_digits": True,
        "max_sentence_length": 4 * MAX_SENTENCE_CHARS,  # in UTF-8 bytes
        "input_sentence_size": INPUT_SENTENCES,
        "shuffle_input_sentence": True,
        "train_extremely_large_corpus": False,
        "num_threads": cpu_threads(),
        "minloglevel": 2,  # the library never prints; failures come back as exceptions
    }


def _sentences(documents: Iterable[str], failures: list[Exception]) -> Iterator[str]:
    """Non-empty lines, cut to MAX_SENTENCE_CHARS; an error is kept for the caller to re-raise."""
    try:
        for document in documents:
            start = 0
            while start <= len(document):  # find, not split: no copy of a huge document
                end = document.find("\n", start)
                end = len(document) if end == -1 else end
                for cut in range(start, end, MAX_SENTENCE_CHARS):
                    yield document[cut : min(cut + MAX_SENTENCE_CHARS, end)]
                start = end + 1
    except Exception as err:
        failures.append(err)


def _piece_bytes(processor: spm.SentencePieceProcessor, token_id: int) -> bytes:
    piece = processor.id_to_piece(token_id)
    if processor.is_byte(token_id):
        return bytes([int(piece[1:-1], 16)])  # "<0xE2>"
    if processor.is_control(token_id) or processor.is_unknown(token_id):
        return piece.encode()  # special tokens decode to their names
    return piece.replace(SPACE_PIECE, " ").encode()


def _training_error(err: RuntimeError, vocab_size: int) -> DataError:
    limit = re.search(r"value <= (\d+)", str(err))
    if limit:
        return _too_few_pieces(int(limit.group(1)))
    needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(err))
    if needed:
        return DataError(
            f"tokenizer_vocab_size={vocab_size} is too small for sentencepiece on this text: "
            f"its common characters, 256 byte tokens and 5 special tokens take {needed.group(1)} "
            "pieces; raise --tokenizer_vocab_size"
        )
    if "sentences_.empty()" in str(err):
        return DataError("sentencepiece got no text to train on; give a non-empty data source")
    return DataError(f"sentencepiece could not train a {vocab_size}-piece model: {err}")


def _too_few_pieces(count: int) -> DataError:
    return DataError(
        f"sentencepiece could only make {count} pieces from this text; "
        f"lower --tokenizer_vocab_size to {count} or less, or give more text"
    )
