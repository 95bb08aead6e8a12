"""`open_corpus`: any source `--data` names as one `Corpus` of documents per split, streamed, and
fingerprinted by what decides the documents (the bytes and the options), not by where they were
found, so prepared data is cached by content."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tinygpt.config import DataConfig
from tinygpt.data.sources.builtin import BUILTIN_CORPORA, builtin_split
from tinygpt.data.sources.documents import Document, DocumentStream, Split, document_text
from tinygpt.data.sources.download import download, is_url
from tinygpt.data.sources.files import files_split, local_splits
from tinygpt.data.sources.hub import hub_splits
from tinygpt.data.sources.text_files import SourceFile
from tinygpt.directories import default_cache_dir
from tinygpt.errors import DataError

FINGERPRINT_VERSION = 1  # bump when the same bytes start to give different documents
IMPORTED_PREFIX = "imported:"  # data.source of a run made by import-hf: no text of its own


@dataclass(frozen=True)
class Corpus:
    """The documents of a source, per split, read lazily and again on every call."""

    origin: str  # for people: what --data named
    fingerprint: str  # sha256 of everything that decides the documents (bytes, options)
    splits: tuple[str, ...]  # ("train",) or ("train", "validation") when the source has its own
    streams: Mapping[str, DocumentStream] = field(repr=False, compare=False)
    sizes: Mapping[str, int | None] = field(repr=False, compare=False)

    def documents(self, split: str) -> Iterator[Document]:
        """A fresh iterator each call: prepare reads a split twice (tokenizer, then tokens)."""
        if split not in self.streams:
            raise ValueError(f"{self.origin} has no {split!r} split; it has {self.splits}")
        return self.streams[split]()

    def total_bytes(self, split: str) -> int | None:
        """Bytes the split reads, for progress in MB/s; None where the source does not say."""
        if split not in self.sizes:
            raise ValueError(f"{self.origin} has no {split!r} split; it has {self.splits}")
        return self.sizes[split]


def imported_source(model_dir: str) -> str:
    """The data source recorded for a model imported from `model_dir`: it names where the
    weights came from, and reading it as text is refused (`open_corpus`)."""
    return f"{IMPORTED_PREFIX}{model_dir}"


def open_corpus(config: DataConfig, cache_dir: Path | None = None) -> Corpus:
    """Open `config.source`; every file is checked (and hashed) now, so errors come early.

    Several sources joined by `+` (`hf:daily_dialog+hf:allenai/prosocial-dialog`, the mix of
    the dialog-chatbot spec in docs/specs.md) become one corpus: each split chains the
    documents of the sources that have it.
    """
    if config.source.startswith(IMPORTED_PREFIX):
        raise DataError(
            f"this run was imported from {config.source.removeprefix(IMPORTED_PREFIX)} and has "
            "no training data of its own; give --data SOURCE (a text file, folder or prepared "
            "directory) to score or train it on"
        )
    parts = _source_parts(config.source)
    opened = [_open_source(part, config, cache_dir) for part in parts]
    if len(opened) == 1:
        return _assemble(*opened[0], config)
    return _assemble(" + ".join(origin for origin, _ in opened), _merge(opened), config)


def _source_parts(source: str) -> list[str]:
    if "+" not in source or Path(source).expanduser().exists():
        return [source]
    parts = [part.strip() for part in source.split("+")]
    if not all(parts):
        raise DataError(f"data source {source!r} has an empty part; join sources as A+B")
    return parts


def _open_source(
    source: str, config: DataConfig, cache_dir: Path | None
) -> tuple[str, dict[str, Split]]:
    if source in BUILTIN_CORPORA:
        return f"built-in corpus {source}", {"train": builtin_split(source)}
    if source.startswith("hf:"):
        return source, hub_splits(source.removeprefix("hf:").strip(), config.text_field)
    if is_url(source):
        path = download(source, cache_dir if cache_dir is not None else default_cache_dir())
        return source, {"train": files_split([SourceFile(path, source, "")], config)}
    return source, local_splits(source, config)


def _merge(opened: list[tuple[str, dict[str, Split]]]) -> dict[str, Split]:
    """One split per name: the documents of every source that has that split, in order. A
    source without a validation split contributes to training only."""
    names = list(dict.fromkeys(name for _, splits in opened for name in splits))
    merged = {}
    for name in names:
        parts = [splits[name] for _, splits in opened if name in splits]
        sizes = [part.total_bytes for part in parts]
        merged[name] = Split(
            stream=_chained([part.stream for part in parts]),
            total_bytes=None if None in sizes else sum(sizes),  # type: ignore[arg-type]
            is_dialog=all(part.is_dialog for part in parts),
            identity=[part.identity for part in parts],
        )
    return merged


def _chained(streams: list[DocumentStream]) -> DocumentStream:
    return lambda: itertools.chain.from_iterable(stream() for stream in streams)


def _assemble(origin: str, splits: dict[str, Split], config: DataConfig) -> Corpus:
    if config.format == "dialog" and not all(split.is_dialog for split in splits.values()):
        raise DataError(
            f"--format dialog needs conversations, but {origin} is plain text; give DailyDialog "
            "(dialogues_*.txt or its folder), ProSocial Dialog JSON, JSON(L) records with a "
            "'dialog' or 'context'/'response' field, hf:daily_dialog or "
            "hf:allenai/prosocial-dialog, or use --format text"
        )
    identity = {
        "version": FINGERPRINT_VERSION,
        "splits": {name: split.identity for name, split in splits.items()},
        "format": config.format,
        "max_documents": config.max_documents,
    }
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8"))
    return Corpus(
        origin=origin,
        fingerprint=fingerprint.hexdigest(),
        splits=tuple(splits),
        streams={name: _finish(split.stream, config) for name, split in splits.items()},
        sizes={name: split.total_bytes for name, split in splits.items()},
    )


def _finish(stream: DocumentStream, config: DataConfig) -> DocumentStream:
    """Apply --format text (conversations rendered) and --max_documents to a raw stream."""

    def documents() -> Iterator[Document]:
        found = stream()
        if config.format == "text":
            found = (document_text(document) for document in found)
        if config.max_documents:
            found = itertools.islice(found, config.max_documents)
        return found

    return documents
