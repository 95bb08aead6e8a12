"""The tokenizer prepared data is encoded with: trained once on the corpus (or given: a run's
own, so that other text gets the ids that run learned), identified by the hash of its JSON so
that data of another vocabulary is never taken for the same."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from tinygpt.config import DataConfig
from tinygpt.data.prepare.meta import PreparedData, load_if_complete
from tinygpt.data.sources import Corpus
from tinygpt.data.sources.documents import document_text
from tinygpt.errors import DataError, TinyGPTError
from tinygpt.tokenizers.base import Tokenizer, build_tokenizer, load_tokenizer
from tinygpt.tokenizers.char import MAX_NAMED_CHARS, CharTokenizer


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """The identity of a vocabulary: the hash of its JSON, keys sorted so it is canonical.
    GPT-2's is fixed, whatever form its JSON has (an older one names a folder of its files)."""
    document = {"kind": "gpt2"} if tokenizer.kind == "gpt2" else tokenizer.to_dict()
    text = json.dumps(document, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def same_tokenizer(first: Tokenizer, second: Tokenizer) -> bool:
    """Equal vocabularies, so equal text gets equal ids."""
    return tokenizer_sha256(first) == tokenizer_sha256(second)


def unknown_characters(corpus: Corpus, tokenizer: Tokenizer) -> list[str]:
    """The corpus's characters that `tokenizer` cannot encode, sorted: only a character
    vocabulary without an unknown id has any (subword vocabularies fall back to bytes)."""
    if not isinstance(tokenizer, CharTokenizer) or tokenizer.unk_id is not None:
        return []
    seen: set[str] = set()
    for split in corpus.splits:
        for document in corpus.documents(split):
            seen.update(document_text(document))
    return sorted(seen.difference(tokenizer.chars))


def name_characters(characters: list[str]) -> str:
    """The first few of `characters` for a one-line error message."""
    more = ", ..." if len(characters) > MAX_NAMED_CHARS else ""
    return ", ".join(repr(c) for c in characters[:MAX_NAMED_CHARS]) + more


def check_characters(corpus: Corpus, tokenizer: Tokenizer) -> None:
    """Up front, not halfway through encoding, and naming the text rather than a shard."""
    unknown = unknown_characters(corpus, tokenizer)
    if unknown:
        raise DataError(
            f"{corpus.origin} has characters outside the {tokenizer.vocab_size}-character "
            f"vocabulary it is tokenized with: {name_characters(unknown)}; a character "
            "vocabulary cannot grow, so remove them from the text"
        )


def prepared_with(directory: Path, tokenizer: Tokenizer) -> PreparedData | None:
    """Data prepared without a given tokenizer whose trained vocabulary is `tokenizer` (a run's
    own training data): the same files, so reused rather than prepared again."""
    prepared = load_if_complete(directory)
    if prepared is None:
        return None
    try:
        is_same = same_tokenizer(load_tokenizer(prepared.tokenizer_path), tokenizer)
    except TinyGPTError:  # a damaged tokenizer.json is not a match
        return None
    return prepared if is_same else None


def tokenizer_in(
    work: Path, config: DataConfig, corpus: Corpus, given: Tokenizer | None = None
) -> Tokenizer:
    """Train the tokenizer on the training documents once; a resumed run loads it back. A given
    tokenizer is saved for the worker processes to load."""
    path = work / "tokenizer.json"
    if given is not None:
        given.save(path)
        return given
    if path.exists():
        return load_tokenizer(path)

    # Char vocabularies come from every split (nanoGPT's convention: validation has no unknown
    # characters) plus the document separator; subword vocabularies learn from training text.
    splits = corpus.splits if config.tokenizer == "char" else ("train",)
    separator_text = ["\n\n"] if config.tokenizer == "char" else []

    def training_texts() -> Iterator[str]:
        texts = (document_text(doc) for split in splits for doc in corpus.documents(split))
        return itertools.chain(texts, separator_text)

    tokenizer = build_tokenizer(config, training_texts)
    tokenizer.save(path)
    return tokenizer
