"""tinygpt tokenizers as the vocabulary a GGUF file carries for llama.cpp (`tokenizer.ggml.*`).

- gpt2 and bpe: llama.cpp's byte-level BPE, `tokenizer.ggml.model = "gpt2"`: tokens in GPT-2's
  byte-to-character spelling, ranked merges, and the `gpt-2` pre-tokenizer, whose regex is the
  one both split text with (tiktoken's GPT-2 pattern, and Hugging Face's ByteLevel default);
- sentencepiece: `tokenizer.ggml.model = "llama"`, llama.cpp's SentencePiece BPE, which merges the
  adjacent pair whose merged piece scores best and falls back to `<0xXX>` byte pieces, as
  SentencePiece does: pieces, scores and types from the model itself;
- char: no llama.cpp tokenizer type splits text into the characters of a list, so it is refused.

Special tokens are CONTROL tokens: llama.cpp makes them from text only when told to parse
special tokens (llama-cli does, for a prompt), where tinygpt encodes "<s>" in text as ordinary
text. An embedding padded past the tokenizer (vocab_size 50304) gets `[PAD<id>]` tokens of type
UNUSED, as llama.cpp's converter writes them: llama.cpp wants one token per embedding row. The
chat template of `export --format hf` goes in too (`tokenizer.chat_template`), which llama.cpp
renders with --jinja.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field

import gguf
import sentencepiece as spm

from tinygpt.errors import ConfigError
from tinygpt.export.hf_tokenizer import chat_template
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.tokenizers.bpe import BPETokenizer
from tinygpt.tokenizers.sentencepiece_bpe import SPACE_PIECE, SentencePieceTokenizer
from tinygpt.tokenizers.tiktoken_gpt2 import GPT2Tokenizer, merge_pairs

LLAMA_CPP_KINDS = ("bpe", "gpt2", "sentencepiece")  # the tokenizers llama.cpp has a type for
# llama.cpp's name for the pre-tokenizer regex both byte-level tokenizers use
GPT2_PRE_TOKENIZER = "gpt-2"
PAD_TOKEN_SCORE = -10000.0  # a padding token's SentencePiece score: never the best merge
# the roles llama.cpp and transformers read, by the name of the token that plays them in our
# tokenizers; the end-of-sequence token is always the tokenizer's own end-of-text id
ROLE_TOKENS = {"bos": ("<s>", "<|endoftext|>"), "unk": ("<unk>",), "pad": ("<pad>",)}


@dataclass(frozen=True)
class GGUFVocabulary:
    """What llama.cpp needs to tokenize as tinygpt does."""

    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    token_types: list[int]  # gguf.TokenType per token
    special_ids: dict[str, int]  # bos, eos, unk, pad: those the tokenizer has
    chat_template: str
    pre_tokenizer: str | None = None
    merges: list[str] = field(default_factory=list)  # "left right", best first
    scores: list[float] = field(default_factory=list)
    add_space_prefix: bool = False  # SentencePiece's dummy prefix


def gguf_vocabulary(tokenizer: Tokenizer, vocab_size: int) -> GGUFVocabulary:
    """The GGUF vocabulary of `tokenizer`, padded to the model's `vocab_size` rows; a
    ConfigError for a tokenizer llama.cpp cannot run."""
    if isinstance(tokenizer, GPT2Tokenizer | BPETokenizer):
        tokens, merges = _byte_level_tokens(tokenizer)
        vocabulary = GGUFVocabulary(
            model="gpt2",
            tokens=tokens,
            token_types=_types_by_special_ids(tokenizer, len(tokens)),
            special_ids=_special_ids(tokenizer),
            chat_template=chat_template(tokenizer),
            pre_tokenizer=GPT2_PRE_TOKENIZER,
            merges=merges,
        )
    elif isinstance(tokenizer, SentencePieceTokenizer):
        vocabulary = _sentencepiece_vocabulary(tokenizer)
    else:
        raise _no_llama_cpp_type(tokenizer.kind)
    return _padded(vocabulary, vocab_size)


def check_tokenizer_kind(kind: str) -> None:
    """Refuse, from the run's config alone, a tokenizer llama.cpp has no type for."""
    if kind not in LLAMA_CPP_KINDS:
        raise _no_llama_cpp_type(kind)


def _no_llama_cpp_type(kind: str) -> ConfigError:
    return ConfigError(
        f"the {kind} tokenizer has no llama.cpp tokenizer type (llama.cpp splits text by BPE "
        f"merges or SentencePiece pieces); GGUF export takes {', '.join(LLAMA_CPP_KINDS)} "
        "tokenizers"
    )


def add_vocabulary(writer: gguf.GGUFWriter, vocabulary: GGUFVocabulary) -> None:
    writer.add_tokenizer_model(vocabulary.model)
    if vocabulary.pre_tokenizer is not None:
        writer.add_tokenizer_pre(vocabulary.pre_tokenizer)
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.token_types)
    if vocabulary.scores:
        writer.add_token_scores(vocabulary.scores)
    if vocabulary.merges:
        writer.add_token_merges(vocabulary.merges)
    role_writers = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "unk": writer.add_unk_token_id,
        "pad": writer.add_pad_token_id,
    }
    for role, token_id in vocabulary.special_ids.items():
        role_writers[role](token_id)
    # tinygpt's prompts start with the text itself: llama.cpp and transformers add nothing
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if vocabulary.model == "llama":
        writer.add_add_space_prefix(vocabulary.add_space_prefix)
    writer.add_chat_template(vocabulary.chat_template)


def _byte_level_tokens(tokenizer: GPT2Tokenizer | BPETokenizer) -> tuple[list[str], list[str]]:
    """Tokens by id and merges by rank, both in GPT-2's byte-to-character spelling."""
    if isinstance(tokenizer, GPT2Tokenizer):
        encoder_json, vocab_bpe = tokenizer.openai_files()
        vocab = json.loads(encoder_json)
        merges = [" ".join(pair) for pair in merge_pairs(vocab_bpe)]
    else:
        document = tokenizer.to_dict()["hf_tokenizer"]
        added = {token["content"]: token["id"] for token in document.get("added_tokens") or []}
        vocab = document["model"]["vocab"] | added
        merges = [m if isinstance(m, str) else " ".join(m) for m in document["model"]["merges"]]
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[token] for token in tokens] != list(range(len(tokens))):
        raise ConfigError(f"the {tokenizer.kind} tokenizer's ids are not 0..{len(tokens) - 1}")
    return tokens, merges


def _types_by_special_ids(tokenizer: Tokenizer, count: int) -> list[int]:
    special = set(tokenizer.special_tokens.values())
    return [
        gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL
        for index in range(count)
    ]


def _special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """bos, eos, unk and pad, where the tokenizer has a token for them."""
    special = tokenizer.special_tokens
    ids = {"eos": tokenizer.eot_id}
    for role, names in ROLE_TOKENS.items():
        found = [special[name] for name in names if name in special]
        if found:
            ids[role] = found[0]
    return ids


def _sentencepiece_vocabulary(tokenizer: SentencePieceTokenizer) -> GGUFVocabulary:
    processor = spm.SentencePieceProcessor(
        model_proto=base64.b64decode(tokenizer.to_dict()["model"])
    )
    if _is_unigram(processor):
        raise ConfigError(
            "the sentencepiece tokenizer is a unigram model; llama.cpp's SentencePiece "
            "tokenizer merges pieces as a BPE model does, so it would split text differently"
        )
    indices = range(processor.get_piece_size())
    return GGUFVocabulary(
        model="llama",
        tokens=[processor.id_to_piece(index) for index in indices],
        token_types=[_piece_type(processor, index) for index in indices],
        special_ids=_special_ids(tokenizer),
        chat_template=chat_template(tokenizer),
        scores=[processor.get_score(index) for index in indices],
        # a dummy prefix shows in the normalized text (tinygpt trains without one)
        add_space_prefix=processor.normalize("a").startswith(SPACE_PIECE),
    )


def _is_unigram(processor: spm.SentencePieceProcessor) -> bool:
    """Only a unigram model gives n-best segmentations. (The model type is also written in the
    model's protobuf, whose parser is not a dependency of tinygpt.)"""
    try:
        processor.nbest_encode_as_ids("a", nbest_size=2)
    except RuntimeError:  # "NBestEncode is not available for the current model"
        return False
    return True


def _piece_type(processor: spm.SentencePieceProcessor, index: int) -> int:
    if processor.is_unknown(index):
        return gguf.TokenType.UNKNOWN
    if processor.is_control(index):
        return gguf.TokenType.CONTROL
    if processor.is_byte(index):
        return gguf.TokenType.BYTE
    if processor.is_unused(index):
        return gguf.TokenType.UNUSED
    return gguf.TokenType.NORMAL


def _padded(vocabulary: GGUFVocabulary, vocab_size: int) -> GGUFVocabulary:
    padding = range(len(vocabulary.tokens), vocab_size)
    if not padding:
        return vocabulary
    tokens = vocabulary.tokens + [f"[PAD{index}]" for index in padding]
    types = vocabulary.token_types + [gguf.TokenType.UNUSED] * len(padding)
    scores = vocabulary.scores + [PAD_TOKEN_SCORE] * len(padding) if vocabulary.scores else []
    return dataclasses.replace(vocabulary, tokens=tokens, token_types=types, scores=scores)
