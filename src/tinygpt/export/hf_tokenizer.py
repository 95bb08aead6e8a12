"""tinygpt tokenizers as Hugging Face tokenizer files, and back.

Each export is a `tokenizer.json` that `AutoTokenizer.from_pretrained` loads as a
`PreTrainedTokenizerFast` (GPT-2's as `GPT2Tokenizer`) and that encodes text to tinygpt's ids:

- char: a WordLevel vocabulary of single characters behind a pre-tokenizer that isolates every
  code point, and a decoder that joins them without spaces;
- bpe: the run's own byte-level BPE `tokenizer.json`, its special tokens named;
- gpt2: OpenAI's `encoder.json` and `vocab.bpe`, copied byte for byte as `vocab.json` and
  `merges.txt` (what `GPT2TokenizerFast` reads), and the same BPE as `tokenizer.json`;
- sentencepiece: the pieces as a byte-fallback BPE whose merges are ranked by piece score
  (SentencePiece merges the best-scoring pair first), digits split one by one, spaces written as
  U+2581 as SentencePiece does; `tokenizer.model` keeps the original for the way back.

`tokenizer_config.json` holds a Jinja `chat_template` that renders a conversation as `tinygpt
chat` prompts the model: the dialog format `<s> User: ... <sep> Bot: ... </s>` that dialog runs
train on, wherever the tokenizer can write its markers, else the `User:`/`Bot:` transcript that
chat falls back to. `apply_chat_template(..., add_generation_prompt=True)` ends where the reply
begins (` Bot:`).

Known differences: Hugging Face matches special-token strings ("<|endoftext|>", "<s>") inside
text, where tinygpt encodes them as ordinary text (the `encode_special_tokens` switch is not saved
in tokenizer.json); and with SentencePiece a literal U+2581 in the text becomes a space piece, where
tinygpt encodes its three bytes. With GPT-2's tokenizer, which has no ids for the dialog markers,
`apply_chat_template` gives the right text but may merge a space into the marker after it
(` <`), where tinygpt encodes each piece of a turn apart.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from tinygpt.data.chat_format import BOS, EOS, SEP, TURN_SEPARATOR
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.generate.chat import prompt_format_for
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.tokenizers.bpe import BPETokenizer, hf_tokenizer_from_json
from tinygpt.tokenizers.char import REPLACEMENT_CHAR, UNK_TOKEN, CharTokenizer
from tinygpt.tokenizers.sentencepiece_bpe import SPACE_PIECE, SentencePieceTokenizer
from tinygpt.tokenizers.tiktoken_gpt2 import EOT_ID, EOT_TOKEN, GPT2Tokenizer, merge_pairs

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SENTENCEPIECE_FILE = "tokenizer.model"
GPT2_VOCAB, GPT2_MERGES = "vocab.json", "merges.txt"  # Hugging Face's names for OpenAI's files
GPT2_MERGES_HEADER = "#version: 0.2\n"  # the first line of OpenAI's vocab.bpe
CHAR_PATTERN = r"[\s\S]"  # every code point, newlines included ("." would skip them)
SUPPORTED = (
    "char, bpe, gpt2 and sentencepiece tokenizers written by `tinygpt export`, and GPT-2's "
    f"as {GPT2_VOCAB} + {GPT2_MERGES} or as {TOKENIZER_FILE} alone (today's transformers)"
)
# what goes around each message, as tinygpt.data.chat_format and tinygpt.generate.chat render
# them: the user's message closes its turn's first half, and the generation prompt opens the reply
DIALOG_PIECES = {
    "turn_separator": TURN_SEPARATOR,  # before every user message but the first
    "user_open": f"{BOS} User: ",
    "user_close": f" {SEP}",
    "bot_open": " Bot: ",
    "bot_close": f" {EOS}",
    "generation_prompt": " Bot:",
}
TRANSCRIPT_PIECES = {
    "turn_separator": "",
    "user_open": "User: ",
    "user_close": "\n",
    "bot_open": "Bot: ",
    "bot_close": "\n",
    "generation_prompt": "Bot:",
}
CHAT_TEMPLATE_BODY = (
    "{%- for message in messages -%}"
    "{%- if message['role'] != ['user', 'assistant'][loop.index0 % 2] -%}"
    "{{- raise_exception('this model takes user and assistant messages in turn, starting with "
    "user (no system message)') -}}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- ('' if loop.first else turn_separator) + user_open + message['content'] + user_close -}}"
    "{%- else -%}"
    "{{- bot_open + message['content'] + bot_close -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- generation_prompt -}}{%- endif -%}"
)


@dataclass(frozen=True)
class HFTokenizerFiles:
    files: dict[str, bytes]  # file name -> contents, for the exported directory
    special_ids: dict[str, int | None]  # bos_token_id, eos_token_id, pad_token_id


@dataclass(frozen=True)
class ImportedTokenizer:
    tokenizer: Tokenizer
    data_fields: dict[str, Any]  # DataConfig fields that describe it


# ----------------------------------------------------------------------------------------------
# Export


def export_tokenizer(tokenizer: Tokenizer, model_max_length: int) -> HFTokenizerFiles:
    """The Hugging Face files of `tokenizer`; a ConfigError if it cannot be written as one."""
    files: dict[str, bytes] = {}
    tokenizer_class = "PreTrainedTokenizerFast"
    if isinstance(tokenizer, CharTokenizer):
        backend = char_backend(tokenizer)
        unk = _char_unk_token(tokenizer)
        roles = {"unk_token": unk} if unk is not None else {}
    elif isinstance(tokenizer, BPETokenizer):
        backend = HFTokenizer.from_str(json.dumps(tokenizer.to_dict()["hf_tokenizer"]))
        roles = {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"}
        roles["pad_token"] = "<pad>"
    elif isinstance(tokenizer, GPT2Tokenizer):
        vocab_bytes, merges_bytes = tokenizer.openai_files()
        backend = _gpt2_backend(vocab_bytes, merges_bytes)
        files |= {GPT2_VOCAB: vocab_bytes, GPT2_MERGES: merges_bytes}
        tokenizer_class = "GPT2Tokenizer"
        roles = dict.fromkeys(("bos_token", "eos_token", "unk_token"), "<|endoftext|>")
    elif isinstance(tokenizer, SentencePieceTokenizer):
        model = base64.b64decode(tokenizer.to_dict()["model"])
        backend = sentencepiece_backend(model)
        files[SENTENCEPIECE_FILE] = model
        roles = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
        roles["pad_token"] = "<pad>"
    else:
        raise ConfigError(
            f"cannot export a {tokenizer.kind!r} tokenizer to Hugging Face; supported: char, bpe, "
            "gpt2, sentencepiece"
        )
    config = {
        "tokenizer_class": tokenizer_class,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,  # would turn " ." into "." when decoding
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        **roles,
        "chat_template": chat_template(tokenizer),
    }
    files[TOKENIZER_FILE] = backend.to_str(pretty=True).encode()
    files[CONFIG_FILE] = (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode()
    special_ids = {
        "bos_token_id": backend.token_to_id(roles["bos_token"]) if "bos_token" in roles else None,
        "eos_token_id": tokenizer.eot_id,
        "pad_token_id": backend.token_to_id(roles["pad_token"]) if "pad_token" in roles else None,
    }
    return HFTokenizerFiles(files, special_ids)


def chat_template(tokenizer: Tokenizer) -> str:
    """A Jinja template that renders messages as `tinygpt chat` prompts this tokenizer's model;
    its pieces are `set` first, so the template reads as the format it writes."""
    pieces = DIALOG_PIECES if prompt_format_for(tokenizer).is_dialog else TRANSCRIPT_PIECES
    # json.dumps writes a string literal Jinja reads back the same (quotes and \n escaped)
    settings = "".join(
        f"{{%- set {name} = {json.dumps(text)} -%}}" for name, text in pieces.items()
    )
    return settings + CHAT_TEMPLATE_BODY


def char_backend(tokenizer: CharTokenizer) -> HFTokenizer:
    """One WordLevel token per character; the unknown-character id, if any, is the last."""
    vocab = {char: index for index, char in enumerate(tokenizer.chars)}
    unk = _char_unk_token(tokenizer)
    if unk is not None:
        vocab[unk] = tokenizer.unk_id  # type: ignore[assignment]
    # without an unk id, an unknown character is an encoding error, as in tinygpt
    backend = HFTokenizer(models.WordLevel(vocab, unk_token=unk or UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(CHAR_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join without the spaces WordLevel decoding puts between
    return backend


def _char_unk_token(tokenizer: CharTokenizer) -> str | None:
    """U+FFFD, which tinygpt decodes the unk id to, unless it is a character of the vocabulary."""
    if tokenizer.unk_id is None:
        return None
    return REPLACEMENT_CHAR if REPLACEMENT_CHAR not in tokenizer.chars else UNK_TOKEN


def _gpt2_backend(vocab_bytes: bytes, merges_bytes: bytes) -> HFTokenizer:
    """GPT-2's byte-level BPE as Hugging Face builds it from vocab.json and merges.txt."""
    vocab = json.loads(vocab_bytes)
    backend = HFTokenizer(models.BPE(vocab, merge_pairs(merges_bytes), fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return backend


def sentencepiece_backend(model: bytes) -> HFTokenizer:
    """A SentencePiece BPE model (as tinygpt trains it) as a Hugging Face BPE.

    SentencePiece BPE merges the adjacent pair whose merged piece scores best; Hugging Face merges
    the pair of lowest rank. Ranking every split of every piece by that piece's id (ids follow
    the scores) gives the same merges. Byte pieces are the fallback for characters outside the
    vocabulary, in both."""
    processor = spm.SentencePieceProcessor(model_proto=model)
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    normal = {
        piece: index
        for index, piece in enumerate(pieces)
        if not (
            processor.is_control(index) or processor.is_unknown(index) or processor.is_byte(index)
        )
    }
    ranked = sorted(
        (index, normal[piece[:cut]], normal[piece[cut:]], piece[:cut], piece[cut:])
        for piece, index in normal.items()
        for cut in range(1, len(piece))
        if piece[:cut] in normal and piece[cut:] in normal
    )
    merges = [(left, right) for *_, left, right in ranked]
    unk = pieces[processor.unk_id()]
    backend = HFTokenizer(
        models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    )
    backend.normalizer = normalizers.Replace(" ", SPACE_PIECE)
    # tinygpt trains with split_digits: no piece holds two digits, or a digit and anything else
    backend.pre_tokenizer = pre_tokenizers.Digits(individual_digits=True)
    backend.decoder = decoders.Sequence(
        [decoders.Replace(SPACE_PIECE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    special = [
        piece
        for index, piece in enumerate(pieces)
        if processor.is_control(index) or processor.is_unknown(index)
    ]
    backend.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in special])
    return backend


# ----------------------------------------------------------------------------------------------
# Import


def import_tokenizer(hf_dir: Path) -> ImportedTokenizer:
    """The tinygpt tokenizer of a Hugging Face model directory, where it has one. GPT-2's, in
    either of its layouts, becomes the gpt2 tokenizer, whose files the run then keeps itself."""
    if (hf_dir / SENTENCEPIECE_FILE).is_file():
        return _import_sentencepiece(hf_dir / SENTENCEPIECE_FILE)
    has_gpt2_files = (hf_dir / GPT2_VOCAB).is_file() and (hf_dir / GPT2_MERGES).is_file()
    if has_gpt2_files:
        gpt2 = GPT2Tokenizer.from_openai_files(
            (hf_dir / GPT2_VOCAB).read_bytes(), (hf_dir / GPT2_MERGES).read_bytes()
        )
        if gpt2 is not None:
            return ImportedTokenizer(gpt2, {"tokenizer": "gpt2"})
    path = hf_dir / TOKENIZER_FILE
    if not path.is_file():
        found = (
            f"{GPT2_VOCAB} and {GPT2_MERGES} that are not GPT-2's (their sha256 differs: "
            f"truncated, or another BPE) and no {TOKENIZER_FILE}"
            if has_gpt2_files
            else f"no tokenizer ({TOKENIZER_FILE}, {SENTENCEPIECE_FILE}, or {GPT2_VOCAB} and "
            f"{GPT2_MERGES})"
        )
        raise CheckpointError(f"{hf_dir} has {found}; tinygpt imports {SUPPORTED}")
    document = _read_tokenizer_json(path)
    model_type = document["model"]["type"]
    if model_type == "WordLevel":
        return ImportedTokenizer(_char_tokenizer(document, path), {"tokenizer": "char"})
    if model_type == "BPE" and _pre_tokenizer(document).get("type") == "ByteLevel":
        gpt2 = _gpt2_of(document)
        if gpt2 is not None:
            return ImportedTokenizer(gpt2, {"tokenizer": "gpt2"})
        return ImportedTokenizer(_byte_level_bpe(document, path), {"tokenizer": "bpe"})
    raise ConfigError(
        f"{path} is a {model_type} tokenizer with no tinygpt equivalent; "
        f"tinygpt imports {SUPPORTED}"
    )


def _read_tokenizer_json(path: Path) -> dict[str, Any]:
    """The JSON object of a tokenizer.json that names its model's type."""
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(document["model"]["type"], str):
            raise TypeError("model.type is not a string")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{path} is not a Hugging Face tokenizer.json") from None
    return document


def _pre_tokenizer(document: dict[str, Any]) -> dict[str, Any]:
    pre_tokenizer = document.get("pre_tokenizer")
    return pre_tokenizer if isinstance(pre_tokenizer, dict) else {}


def _gpt2_of(document: dict[str, Any]) -> GPT2Tokenizer | None:
    """GPT-2's tokenizer if a byte-level BPE tokenizer.json is GPT-2's, as transformers 5
    saves it (tokenizer.json alone): the vocabulary and merges are OpenAI's files when written
    in their layout, and text reaches the BPE as GPT-2 gives it (no normalizer, no prefix
    space, GPT-2's regex). Anything more or less (an added token, a missing merge) is not."""
    pre_tokenizer = _pre_tokenizer(document)
    if (
        document.get("normalizer") is not None
        or pre_tokenizer.get("add_prefix_space", False)
        or not pre_tokenizer.get("use_regex", True)
    ):
        return None
    try:
        added = {token["content"]: token["id"] for token in document.get("added_tokens") or []}
        vocab = sorted(document["model"]["vocab"].items(), key=lambda item: item[1])
        merges = [m if isinstance(m, str) else " ".join(m) for m in document["model"]["merges"]]
        encoder_json = json.dumps(dict(vocab)).encode()
        vocab_bpe = (GPT2_MERGES_HEADER + "".join(f"{merge}\n" for merge in merges)).encode()
    except (AttributeError, KeyError, TypeError):  # not the shapes a tokenizer.json has
        return None
    if added not in ({}, {EOT_TOKEN: EOT_ID}):
        return None
    return GPT2Tokenizer.from_openai_files(encoder_json, vocab_bpe)


def _byte_level_bpe(document: dict[str, Any], path: Path) -> BPETokenizer:
    try:
        return BPETokenizer(hf_tokenizer_from_json(document))
    except ValueError as err:
        raise ConfigError(
            f"{path} is a byte-level BPE that tinygpt cannot use ({err}); tinygpt imports "
            f"{SUPPORTED}"
        ) from None


def _import_sentencepiece(path: Path) -> ImportedTokenizer:
    try:
        tokenizer = SentencePieceTokenizer(path.read_bytes())
    except ValueError as err:
        raise ConfigError(
            f"{path} is not a SentencePiece model tinygpt can use ({err}); tinygpt imports "
            f"{SUPPORTED}"
        ) from None
    return ImportedTokenizer(tokenizer, {"tokenizer": "sentencepiece"})


def _char_tokenizer(document: dict[str, Any], path: Path) -> CharTokenizer:
    """Accept only what `char_backend` writes: single characters with ids in code-point order."""
    vocab = document["model"].get("vocab") or {}
    unk = document["model"].get("unk_token")
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    has_unk = unk in vocab and by_id[-1][0] == unk and len(by_id) > 1
    chars = [token for token, _ in (by_id[:-1] if has_unk else by_id)]
    try:
        tokenizer = CharTokenizer(chars, "unk" if has_unk else "error")
    except ValueError:
        tokenizer = None
    expected = json.loads(char_backend(tokenizer).to_str()) if tokenizer is not None else None
    parts = ("model", "normalizer", "pre_tokenizer", "decoder")
    if expected is None or any(document.get(part) != expected[part] for part in parts):
        raise ConfigError(
            f"{path} is a WordLevel tokenizer but not a character-level one in code-point order "
            f"as `tinygpt export` writes; tinygpt imports {SUPPORTED}"
        )
    return tokenizer
