"""Where training text comes from: a built-in corpus, a file, a folder or glob, JSON(L) records,
DailyDialog or ProSocial Dialog conversations, an http(s) URL, or a Hugging Face dataset.

`open_corpus` gives a `Corpus` that streams documents, so a corpus of many GB is never held in
memory, and keeps the source's own validation split where it has one. `read_source` reads one
text file whole; `SourceText`'s sha256 identifies the content, so prepared data is cached by
what the text is, not by where it was found.

Documents in plain text: a line holding only `<|endoftext|>` (TinyStories V2, CS336) ends a
document; the separator lines are dropped, each document is stripped of surrounding whitespace
and empty ones are skipped. A text without any separator line is ONE document, returned
unchanged as a `WholeFile` (TinyShakespeare; prepare may split it by position). Such a file is
held in memory whole, so a many-GB corpus should use separators or be split into files.

Splits: a folder with a `train/` subfolder (DailyDialog's layout) reads only `train/` and, as the
"validation" split, `validation/` (or valid/, val/, dev/); `test/` is never read. A Hugging Face
dataset gives its train and validation splits. Anything else has only "train".

Conversations: DailyDialog lines (`__eou__`), JSON(L) records or rows with a `dialog` list, and
ProSocial Dialog `context`/`response` records (rows grouped by consecutive `dialogue_id`) become
`Conversation`s; with --format text they are rendered as `<s> User: ... </s>` text.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import http.client
import io
import itertools
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from tinygpt.atomic_files import write_bytes_atomic
from tinygpt.config import DataConfig
from tinygpt.data.chat_format import (
    Conversation,
    detokenize_dailydialog,
    pair_utterances,
    render_text,
)
from tinygpt.errors import DataError

logger = logging.getLogger(__name__)

BUILTIN_CORPORA = ("tinyshakespeare",)
DOWNLOAD_TIMEOUT_S = 60
BINARY_SNIFF_BYTES = 8192  # a NUL byte this early means the file is not text
UTF8_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 20
DOCUMENT_SEPARATOR = "<|endoftext|>"  # alone on a line, it ends a document
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")  # a source's own held-out split
FOLDER_SUFFIXES = (".txt", ".jsonl")  # files read from a folder; .json may be metadata
DAILYDIALOG_EOU = "__eou__"  # DailyDialog's end-of-utterance marker
DAILYDIALOG_LABELS = re.compile(r"dialogues_(act|emotion)_.*\.txt")  # labels, not text
FINGERPRINT_VERSION = 1  # bump when the same bytes start to give different documents
LOCAL_PATH_HINT = "--data path/to/file.txt|.jsonl|folder"
IMPORTED_PREFIX = "imported:"  # data.source of a run made by import-hf: no text of its own

Document = str | Conversation
DocumentStream = Callable[[], Iterator[Document]]
FileKind = Literal["text", "dailydialog", "jsonl", "json"]
RecordLayout = Literal["text", "dailydialog", "prosocial_columns", "prosocial_rows"]


class WholeFile(str):
    """A text file without document separators, as its one document. It is not a unit the way
    a story is: prepare cuts a large one by position rather than send it whole to one split."""

    __slots__ = ()


@dataclass(frozen=True)
class SourceText:
    text: str
    sha256: str  # of the UTF-8 bytes of `text` (after any BOM is stripped)
    origin: str  # for people: "built-in corpus tinyshakespeare", a path or a URL


def default_cache_dir() -> Path:
    """Downloads and prepared datasets live here; TINYGPT_CACHE_DIR moves it (tests, clusters)."""
    configured = os.environ.get("TINYGPT_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tinygpt"


def read_source(source: str, cache_dir: Path | None = None) -> SourceText:
    """Read text from a built-in corpus name, an http(s) URL (cached), or a local path."""
    if source in BUILTIN_CORPORA:
        return _read_builtin_corpus(source)
    if re.match(r"https?://", source, flags=re.IGNORECASE):
        path = _download(source, cache_dir if cache_dir is not None else default_cache_dir())
        return _decode_text(_read_file_bytes(path, source), source)
    path = Path(source).expanduser()
    return _decode_text(_read_file_bytes(path, str(path)), str(path))


def _read_builtin_corpus(name: str) -> SourceText:
    corpora = resources.files("tinygpt.data") / "corpora"
    metadata = json.loads((corpora / f"{name}.json").read_text(encoding="utf-8"))
    data = gzip.decompress((corpora / metadata["file"]).read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != metadata["sha256"]:
        raise DataError(
            f"built-in corpus {name} is corrupted (sha256 {digest[:12]}..., expected "
            f"{metadata['sha256'][:12]}...); reinstall tinygpt"
        )
    return SourceText(data.decode("utf-8"), digest, f"built-in corpus {name}")


def _read_file_bytes(path: Path, origin: str) -> bytes:
    _check_is_file(path, origin)
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"could not read {origin}: {err.strerror or err}") from None


def _decode_text(data: bytes, origin: str) -> SourceText:
    """Check that `data` is usable text; strip a BOM and normalise nothing else."""
    skipped = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    data = data[skipped:]
    nul = data.find(b"\x00", 0, BINARY_SNIFF_BYTES)
    if nul >= 0:
        raise DataError(
            f"{origin} looks binary (NUL byte at offset {skipped + nul}); give a UTF-8 text file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{origin} is not valid UTF-8 (bad byte at offset {skipped + err.start}); "
            "convert it to UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None
    if not text.strip():
        what = "is empty" if not text else "has only whitespace"
        raise DataError(f"{origin} {what}; give a file with some text")
    return SourceText(text, hashlib.sha256(data).hexdigest(), origin)


# ----------------------------------------------------------------------------------------------
# Corpora: documents, streamed


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


@dataclass(frozen=True)
class _Split:
    stream: DocumentStream  # raw documents: text, or conversations
    total_bytes: int | None
    is_dialog: bool
    identity: Any  # JSON-able; hashed into the corpus fingerprint


@dataclass(frozen=True)
class _SourceFile:
    path: Path
    origin: str  # the path as the user will recognise it, or the URL it came from
    name: str  # inside a folder or glob: decides order, so it is part of the fingerprint


def imported_source(model_dir: str) -> str:
    """The data source recorded for a model imported from `model_dir`: it names where the
    weights came from, and reading it as text is refused (`open_corpus`)."""
    return f"{IMPORTED_PREFIX}{model_dir}"


def open_corpus(config: DataConfig, cache_dir: Path | None = None) -> Corpus:
    """Open `config.source`; every file is checked (and hashed) now, so errors come early.

    Several sources joined by `+` (`hf:daily_dialog+hf:allenai/prosocial-dialog`, seed 002's
    mix) become one corpus: each split chains the documents of the sources that have it.
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
) -> tuple[str, dict[str, _Split]]:
    if source in BUILTIN_CORPORA:
        return f"built-in corpus {source}", {"train": _builtin_split(source)}
    if source.startswith("hf:"):
        return source, _hf_splits(source.removeprefix("hf:").strip(), config.text_field)
    if re.match(r"https?://", source, flags=re.IGNORECASE):
        path = _download(source, cache_dir if cache_dir is not None else default_cache_dir())
        return source, {"train": _files_split([_SourceFile(path, source, "")], config)}
    return source, _local_splits(source, config)


def _merge(opened: list[tuple[str, dict[str, _Split]]]) -> dict[str, _Split]:
    """One split per name: the documents of every source that has that split, in order. A
    source without a validation split contributes to training only."""
    names = list(dict.fromkeys(name for _, splits in opened for name in splits))
    merged = {}
    for name in names:
        parts = [splits[name] for _, splits in opened if name in splits]
        sizes = [part.total_bytes for part in parts]
        merged[name] = _Split(
            stream=_chained([part.stream for part in parts]),
            total_bytes=None if None in sizes else sum(sizes),  # type: ignore[arg-type]
            is_dialog=all(part.is_dialog for part in parts),
            identity=[part.identity for part in parts],
        )
    return merged


def _chained(streams: list[DocumentStream]) -> DocumentStream:
    return lambda: itertools.chain.from_iterable(stream() for stream in streams)


def _assemble(origin: str, splits: dict[str, _Split], config: DataConfig) -> Corpus:
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
            found = (render_text(d) if isinstance(d, Conversation) else d for d in found)
        if config.max_documents:
            found = itertools.islice(found, config.max_documents)
        return found

    return documents


def split_documents(lines: Iterable[str]) -> Iterator[str]:
    """Plain text to documents by the module's rule: `<|endoftext|>` lines, else one document."""
    parts: list[str] = []
    is_separated = False
    for line in lines:
        if DOCUMENT_SEPARATOR in line and line.strip() == DOCUMENT_SEPARATOR:
            is_separated = True
            document = "".join(parts).strip()
            parts.clear()
            if document:
                yield document
        else:
            parts.append(line)
    document = "".join(parts)
    if is_separated:
        document = document.strip()
    if document.strip():
        yield document if is_separated else WholeFile(document)


def _builtin_split(name: str) -> _Split:
    text = _read_builtin_corpus(name)
    return _Split(
        stream=lambda: split_documents(io.StringIO(text.text, newline="")),
        total_bytes=len(text.text.encode("utf-8")),
        is_dialog=False,
        identity={"builtin": name, "sha256": text.sha256},
    )


# ----------------------------------------------------------------------------------------------
# Local files, folders and globs


def _local_splits(source: str, config: DataConfig) -> dict[str, _Split]:
    path = Path(source).expanduser()
    if not path.exists() and any(c in source for c in "*?["):
        return {"train": _files_split(_glob_files(source), config)}
    if path.is_dir():
        train = path / "train"
        validation = next((path / n for n in VALIDATION_SPLIT_NAMES if (path / n).is_dir()), None)
        if not train.is_dir():
            return {"train": _files_split(_folder_files(path, source), config)}
        # a train/ folder means the source is split already: only train/ and its validation/
        # folder are read, never test/ or files beside them
        splits = {"train": _files_split(_folder_files(train, str(train)), config)}
        if validation is not None:
            splits["validation"] = _files_split(_folder_files(validation, str(validation)), config)
        return splits
    if DAILYDIALOG_LABELS.fullmatch(path.name):
        raise DataError(
            f"{source} holds DailyDialog labels, not text; give dialogues_<split>.txt or its folder"
        )
    return {"train": _files_split([_SourceFile(path, source, "")], config)}


def _glob_files(pattern: str) -> list[_SourceFile]:
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    files = [
        _SourceFile(Path(m), m, m)
        for m in matches
        if Path(m).is_file() and not DAILYDIALOG_LABELS.fullmatch(Path(m).name)
    ]
    if not files:
        raise DataError(f"{pattern} matches no file; give a text file, folder or glob of files")
    return files


def _folder_files(folder: Path, origin: str) -> list[_SourceFile]:
    """Text and JSONL files below `folder` in name order; hidden files and labels are skipped."""
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if (
            path.suffix in FOLDER_SUFFIXES
            and not any(part.startswith(".") for part in relative.parts)
            and not DAILYDIALOG_LABELS.fullmatch(path.name)
            and path.is_file()
        ):
            files.append(_SourceFile(path, str(path), relative.as_posix()))
    if not files:
        raise DataError(f"{origin} has no .txt or .jsonl files; give a text file or folder")
    return sorted(files, key=lambda f: f.name)


def _files_split(files: list[_SourceFile], config: DataConfig) -> _Split:
    """Check and hash every file now; stream them, in order, when documents are asked for."""
    readers: list[Callable[[], Iterator[Document]]] = []
    kinds: list[tuple[str, bool]] = []  # (origin, is_dialog)
    identity: list[dict[str, str]] = []
    total_bytes = 0
    for file in files:
        digest, size = _scan_file(file.path, file.origin)
        kind = _file_kind(file)
        is_dialog = kind == "dailydialog"
        if kind in ("json", "jsonl"):
            is_dialog = _peek_layout(file, kind, config.text_field) != "text"
        readers.append(_file_reader(file, kind, config.text_field))
        kinds.append((file.origin, is_dialog))
        identity.append({"name": file.name, "sha256": digest, "kind": kind})
        total_bytes += size
    dialogs = [origin for origin, is_dialog in kinds if is_dialog]
    if dialogs and len(dialogs) < len(kinds):
        text = next(origin for origin, is_dialog in kinds if not is_dialog)
        raise DataError(
            f"{dialogs[0]} holds conversations but {text} plain text; give files of one kind"
        )
    if any(entry["kind"] in ("json", "jsonl") for entry in identity):
        identity.append({"text_field": config.text_field})
    return _Split(
        stream=lambda: (document for read in readers for document in read()),
        total_bytes=total_bytes,
        is_dialog=bool(dialogs),
        identity=identity,
    )


def _scan_file(path: Path, origin: str) -> tuple[str, int]:
    """sha256 (after any BOM) and size, checking in one streamed pass that the file is text."""
    _check_is_file(path, origin)
    digest, decoder = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")()
    skipped = consumed = 0  # BOM bytes; bytes after the BOM already decoded
    is_first, has_text = True, False
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                if is_first:
                    skipped = len(UTF8_BOM) if chunk.startswith(UTF8_BOM) else 0
                    chunk = chunk[skipped:]
                    _check_not_binary(chunk, skipped, origin)
                    is_first = False
                text = _decode_chunk(decoder, chunk, skipped + consumed, origin)
                has_text = has_text or (bool(text) and not text.isspace())
                digest.update(chunk)
                consumed += len(chunk)
            _decode_chunk(decoder, b"", skipped + consumed, origin, is_final=True)
    except OSError as err:
        raise DataError(f"could not read {origin}: {err.strerror or err}") from None
    if not has_text:
        what = "is empty" if not consumed else "has only whitespace"
        raise DataError(f"{origin} {what}; give a file with some text")
    return digest.hexdigest(), skipped + consumed


def _check_is_file(path: Path, origin: str) -> None:
    if not path.exists():
        raise DataError(
            f"{origin} does not exist; give a text file, folder, glob, JSON(L) file, http(s) URL, "
            f"hf:NAME or a built-in corpus name ({', '.join(BUILTIN_CORPORA)})"
        )
    if path.is_dir():
        raise DataError(f"{origin} is a directory; give a text file")


def _check_not_binary(head: bytes, skipped: int, origin: str) -> None:
    nul = head.find(b"\x00", 0, BINARY_SNIFF_BYTES)
    if nul >= 0:
        raise DataError(
            f"{origin} looks binary (NUL byte at offset {skipped + nul}); give a UTF-8 text file"
        )


def _decode_chunk(
    decoder: codecs.IncrementalDecoder,
    chunk: bytes,
    offset: int,
    origin: str,
    is_final: bool = False,
) -> str:
    """Decode one chunk; a bad byte is reported at its offset in the file, as read_source does."""
    pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
    try:
        return decoder.decode(chunk, final=is_final)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{origin} is not valid UTF-8 (bad byte at offset {offset - pending + err.start}); "
            "convert it to UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None


def _file_kind(file: _SourceFile) -> FileKind:
    suffix = file.path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "jsonl" if suffix == ".jsonl" else "json"
    with file.path.open("rb") as handle:
        first_line = handle.read(BINARY_SNIFF_BYTES).split(b"\n", 1)[0]
    return "dailydialog" if DAILYDIALOG_EOU.encode() in first_line else "text"


def _file_reader(file: _SourceFile, kind: FileKind, text_field: str) -> DocumentStream:
    if kind == "text":
        return lambda: split_documents(_file_lines(file))
    if kind == "dailydialog":
        return lambda: _dailydialog_documents(_file_lines(file))
    records = _jsonl_records if kind == "jsonl" else _json_records
    return lambda: _record_documents(records(file), text_field, file.origin, "line")


def _file_lines(file: _SourceFile) -> Iterator[str]:
    """Lines with their endings, so joined they give the file back (BOM excepted)."""
    try:
        with file.path.open(encoding="utf-8-sig", newline="") as handle:
            yield from handle
    except (OSError, UnicodeError) as err:
        raise DataError(
            f"could not read {file.origin} ({err}); did it change while read?"
        ) from None


def _dailydialog_documents(lines: Iterable[str]) -> Iterator[Conversation]:
    """One dialogue per line, utterances ending in __eou__, speakers alternating from A (User)."""
    for line in lines:
        utterances = (detokenize_dailydialog(u) for u in line.split(DAILYDIALOG_EOU))
        conversation = pair_utterances(u for u in utterances if u)
        if conversation.turns:
            yield conversation


# ----------------------------------------------------------------------------------------------
# JSON records: a text field, or a dialog layout (DailyDialog, ProSocial Dialog)


def _jsonl_records(file: _SourceFile) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(_file_lines(file), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{file.origin} line {number} is not valid JSON ({err.msg}, column {err.colno}); "
                "fix or remove that line"
            ) from None
        yield number, record


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _json_records(file: _SourceFile) -> Iterator[tuple[int, Any]]:
    """The records of a .json file (a list of them, or one), each with the line it starts on.

    A .json file is read whole; a corpus too big for memory belongs in .jsonl.
    """
    text = "".join(_file_lines(file))
    decoder = json.JSONDecoder()
    position = _JSON_SPACE.match(text).end()
    is_list = text.startswith("[", position)
    if is_list:
        position = _JSON_SPACE.match(text, position + 1).end()
    line, counted = 1, 0
    while not (is_list and text.startswith("]", position)):
        try:
            record, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{file.origin} is not valid JSON ({err.msg}, line {err.lineno} column "
                f"{err.colno}); fix the file"
            ) from None
        line, counted = line + text.count("\n", counted, position), position
        yield line, record
        position = _JSON_SPACE.match(text, end).end()
        if not is_list:
            break
        if text.startswith(",", position):
            position = _JSON_SPACE.match(text, position + 1).end()
        elif not text.startswith("]", position):
            at_line = line + text.count("\n", counted, position)
            raise DataError(
                f"{file.origin} is not valid JSON (expected ',' or ']' on line {at_line}); "
                "fix the file"
            )


def _peek_layout(file: _SourceFile, kind: FileKind, text_field: str) -> RecordLayout:
    records = _jsonl_records(file) if kind == "jsonl" else _json_records(file)
    first = next(records, None)
    records.close()
    if first is None:
        raise DataError(f"{file.origin} holds no JSON records; give records with a text field")
    return _record_layout(first[1], text_field, f"{file.origin} line {first[0]}")


def _record_layout(record: Any, text_field: str, where: str) -> RecordLayout:
    """Decided by a source's first record, so that later records missing a field are errors."""
    _check_is_object(record, where)
    if text_field in record:
        return "text"
    if isinstance(record.get("dialog"), list):
        return "dailydialog"  # HF daily_dialog: a list of utterances per row
    if "context" in record and "response" in record:
        # HF allenai/prosocial-dialog has one row per turn; DialogStudio's sample holds the
        # same rows as one object of columns
        return "prosocial_columns" if isinstance(record["context"], list) else "prosocial_rows"
    raise _missing_field(record, text_field, where)


def _check_is_object(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{where} is a JSON {type(record).__name__}, not an object; give records")


def _missing_field(record: dict[str, Any], name: str, where: str) -> DataError:
    fields = ", ".join(record) or "none"
    return DataError(
        f"{where} has no {name!r} field (its fields: {fields}); set --text_field to the field "
        "that holds the text"
    )


def _field(record: dict[str, Any], name: str, kind: type, where: str) -> Any:
    _check_is_object(record, where)
    if name not in record:
        raise _missing_field(record, name, where)
    value = record[name]
    if not isinstance(value, kind):
        raise DataError(
            f"{where}: field {name!r} is a {type(value).__name__}, expected {kind.__name__}"
        )
    return value


def _record_documents(
    records: Iterator[tuple[int, Any]], text_field: str, origin: str, unit: str
) -> Iterator[Document]:
    first = next(records, None)
    if first is None:
        return
    layout = _record_layout(first[1], text_field, f"{origin} {unit} {first[0]}")
    located = ((f"{origin} {unit} {n}", r) for n, r in itertools.chain([first], records))
    if layout == "text":
        for where, record in located:
            text = _field(record, text_field, str, where)
            if text.strip():
                yield text
    elif layout == "dailydialog":
        for where, record in located:
            utterances = (detokenize_dailydialog(u) for u in _field(record, "dialog", list, where))
            conversation = pair_utterances(u for u in utterances if u)
            if conversation.turns:
                yield conversation
    else:
        turns = _prosocial_turns(located, columns=layout == "prosocial_columns")
        for _, group in itertools.groupby(turns, key=lambda turn: turn[0]):
            pairs = tuple((user, bot) for _, user, bot in group if user and bot)
            if pairs:
                yield Conversation(pairs)


def _prosocial_turns(
    located: Iterable[tuple[str, Any]], columns: bool
) -> Iterator[tuple[Any, str, str]]:
    """(dialogue id, user, bot) per turn; consecutive turns of one dialogue_id are one
    conversation. Without a dialogue_id a row is a conversation, a column record one too."""
    for index, (where, record) in enumerate(located):
        if not columns:
            user = _field(record, "context", str, where)
            bot = _field(record, "response", str, where)
            yield record.get("dialogue_id", ("row", index)), user.strip(), bot.strip()
            continue
        users = _field(record, "context", list, where)
        bots = _field(record, "response", list, where)
        ids = record.get("dialogue_id") or [0] * len(users)
        for dialogue_id, user, bot in zip(ids, users, bots, strict=False):
            yield (index, dialogue_id), str(user).strip(), str(bot).strip()


# ----------------------------------------------------------------------------------------------
# Hugging Face datasets, streamed


def _hf_splits(name: str, text_field: str) -> dict[str, _Split]:
    if not name:
        raise DataError("hf: needs a dataset name, e.g. hf:roneneldan/TinyStories")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"hf:{name} needs the datasets package (pip install datasets); or download the files "
            f"and pass a local path: {LOCAL_PATH_HINT}"
        ) from None
    try:
        loaded = datasets.load_dataset(name, streaming=True)
    except Exception as err:  # the hub's failures have many types; all mean "not loaded"
        raise DataError(
            f"could not load hf:{name} from the Hugging Face hub ({_first_line(err)}); download "
            f"the files and pass a local path: {LOCAL_PATH_HINT}"
        ) from None
    available = dict(loaded) if isinstance(loaded, Mapping) else {"train": loaded}
    if "train" not in available:
        raise DataError(f"hf:{name} has no train split (it has: {', '.join(available)})")
    chosen = {"train": "train"}
    validation = next((n for n in VALIDATION_SPLIT_NAMES if n in available), None)
    if validation is not None:
        chosen["validation"] = validation
    return {
        split: _hf_split(name, hf_split, available[hf_split], text_field)
        for split, hf_split in chosen.items()
    }


def _hf_split(name: str, hf_split: str, dataset: Any, text_field: str) -> _Split:
    origin = f"hf:{name} {hf_split} split"
    rows = _hf_rows(dataset, origin)
    first = next(rows, None)
    rows.close()
    if first is None:
        raise DataError(f"{origin} is empty; give a dataset with rows")
    layout = _record_layout(first, text_field, f"{origin} row 1")
    info = getattr(dataset, "info", None)
    return _Split(
        stream=lambda: _record_documents(
            enumerate(_hf_rows(dataset, origin), start=1), text_field, origin, "row"
        ),
        total_bytes=None,
        is_dialog=layout != "text",
        identity={
            "hf": name,
            "split": hf_split,
            "fingerprint": getattr(dataset, "_fingerprint", None),
            "config": getattr(info, "config_name", None),
            "version": str(getattr(info, "version", None)),
            "text_field": text_field,
        },
    )


def _hf_rows(dataset: Iterable[Any], origin: str) -> Iterator[Any]:
    """Rows of a streamed dataset; a network failure mid-stream becomes a DataError."""
    rows = iter(dataset)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as err:  # as in load_dataset: many types, one meaning
            raise DataError(f"could not read {origin} ({_first_line(err)}); try again") from None
        yield row


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ----------------------------------------------------------------------------------------------
# Downloads


def _download(url: str, cache_dir: Path) -> Path:
    """Download `url` once into the cache; later calls reuse it while its sha256 still matches."""
    downloads = cache_dir / "downloads"
    target = downloads / _download_name(url)
    sidecar = target.with_name(target.name + ".json")
    if _is_cached(target, sidecar, url):
        logger.info("using cached download of %s from %s", url, target)
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, target)
    digest, size = _fetch_to(url, target)
    record = {
        "url": url,
        "sha256": digest,
        "bytes": size,
        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_bytes_atomic(sidecar, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    return target


def _download_name(url: str) -> str:
    """The URL's hash keeps two `input.txt`s apart; the basename keeps the cache readable."""
    basename = PurePosixPath(urllib.parse.urlsplit(url).path).name
    basename = re.sub(r"[^A-Za-z0-9._-]", "_", basename)[:80] or "download"
    return f"{hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]}-{basename}"


def _is_cached(target: Path, sidecar: Path, url: str) -> bool:
    try:
        record: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
        return record.get("url") == url and record.get("sha256") == _file_sha256(target)
    except (OSError, ValueError, AttributeError):
        return False


def _file_sha256(path: Path) -> str:
    return _hash_of(path)[0].hexdigest()


def _fetch_to(url: str, target: Path) -> tuple[str, int]:
    """Stream into `target.part`, then rename it to `target`. A download that breaks off keeps
    its `.part`, and the next attempt asks the server for the rest (an HTTP Range request)
    instead of starting again; a server that ignores ranges sends it all, which is fine too."""
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "tinygpt"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            resumed = have > 0 and response.status == 206
            if have and not resumed:
                logger.info("%s does not resume downloads; starting again", url)
            digest, size = _hash_of(partial) if resumed else (hashlib.sha256(), 0)
            expected = response.headers.get("Content-Length")
            with open(partial, "ab" if resumed else "wb") as file:
                received = 0
                while chunk := response.read(CHUNK_BYTES):
                    file.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                file.flush()
                os.fsync(file.fileno())
            size += received
            if expected is not None and received != int(expected):
                raise DataError(
                    f"the download of {url} broke off after {size:,} bytes; run again to "
                    "resume the download"
                )
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the range starts at the end: the .part is complete
            digest, size = _hash_of(partial)
        else:
            raise DataError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DataError(
            f"could not download {url}: {err.reason}; check the address and your connection"
        ) from None
    except TimeoutError:
        raise DataError(
            f"could not download {url}: no answer within {DOWNLOAD_TIMEOUT_S} s; run again to "
            "resume the download"
        ) from None
    except (OSError, http.client.HTTPException) as err:
        raise DataError(
            f"could not download {url}: {err!r}; run again to resume the download"
        ) from None
    os.replace(partial, target)
    return digest.hexdigest(), size


def _hash_of(path: Path) -> tuple[Any, int]:
    """A running sha256 of what is already downloaded, to continue with the rest."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest, path.stat().st_size
