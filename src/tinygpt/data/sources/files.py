"""Local files, folders and globs as splits.

A folder is read in name order: its .txt and .jsonl files (a .json beside them may be metadata),
hidden files and DailyDialog's label files skipped. A folder with a `train/` subfolder
(DailyDialog's layout) is split already: only `train/` is read and, as the "validation" split,
`validation/` (or valid/, val/, dev/); `test/` is never read. Anything else has only "train".

Each file is plain text (documents by `split_documents`), DailyDialog text (`__eou__` in its
first line), or JSON(L) records (`records`). One split holds files of one kind: conversations
or plain text, not both.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Literal

from tinygpt.config import DataConfig
from tinygpt.data.sources.dialogs import (
    dailydialog_documents,
    is_dailydialog_label_file,
    is_dailydialog_line,
)
from tinygpt.data.sources.documents import (
    VALIDATION_SPLIT_NAMES,
    DocumentStream,
    Split,
    split_documents,
)
from tinygpt.data.sources.records import (
    json_records,
    jsonl_records,
    peek_layout,
    record_documents,
)
from tinygpt.data.sources.text_files import SourceFile, file_lines, read_first_line, scan_file
from tinygpt.errors import DataError

FOLDER_SUFFIXES = (".txt", ".jsonl")  # files read from a folder; .json may be metadata

FileKind = Literal["text", "dailydialog", "jsonl", "json"]


def local_splits(source: str, config: DataConfig) -> dict[str, Split]:
    """The splits of a local file, folder or glob."""
    path = Path(source).expanduser()
    if not path.exists() and any(c in source for c in "*?["):
        return {"train": files_split(_glob_files(source), config)}
    if path.is_dir():
        train = path / "train"
        validation = next((path / n for n in VALIDATION_SPLIT_NAMES if (path / n).is_dir()), None)
        if not train.is_dir():
            return {"train": files_split(_folder_files(path, source), config)}
        # a train/ folder means the source is split already: only train/ and its validation/
        # folder are read, never test/ or files beside them
        splits = {"train": files_split(_folder_files(train, str(train)), config)}
        if validation is not None:
            splits["validation"] = files_split(_folder_files(validation, str(validation)), config)
        return splits
    if is_dailydialog_label_file(path.name):
        raise DataError(
            f"{source} holds DailyDialog labels, not text; give dialogues_<split>.txt or its folder"
        )
    return {"train": files_split([SourceFile(path, source, "")], config)}


def files_split(files: list[SourceFile], config: DataConfig) -> Split:
    """Check and hash every file now; stream them, in order, when documents are asked for."""
    readers: list[DocumentStream] = []
    kinds: list[tuple[str, bool]] = []  # (origin, is_dialog)
    identity: list[dict[str, str]] = []
    total_bytes = 0
    for file in files:
        digest, size = scan_file(file.path, file.origin)
        kind = _file_kind(file)
        is_dialog = kind == "dailydialog"
        if kind in ("json", "jsonl"):
            is_dialog = peek_layout(file, kind == "jsonl", config.text_field) != "text"
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
    return Split(
        stream=lambda: (document for read in readers for document in read()),
        total_bytes=total_bytes,
        is_dialog=bool(dialogs),
        identity=identity,
    )


def _glob_files(pattern: str) -> list[SourceFile]:
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    files = [
        SourceFile(Path(m), m, m)
        for m in matches
        if Path(m).is_file() and not is_dailydialog_label_file(Path(m).name)
    ]
    if not files:
        raise DataError(f"{pattern} matches no file; give a text file, folder or glob of files")
    return files


def _folder_files(folder: Path, origin: str) -> list[SourceFile]:
    """Text and JSONL files below `folder` in name order; hidden files and labels are skipped."""
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if (
            path.suffix in FOLDER_SUFFIXES
            and not any(part.startswith(".") for part in relative.parts)
            and not is_dailydialog_label_file(path.name)
            and path.is_file()
        ):
            files.append(SourceFile(path, str(path), relative.as_posix()))
    if not files:
        raise DataError(f"{origin} has no .txt or .jsonl files; give a text file or folder")
    return sorted(files, key=lambda f: f.name)


def _file_kind(file: SourceFile) -> FileKind:
    suffix = file.path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "jsonl" if suffix == ".jsonl" else "json"
    return "dailydialog" if is_dailydialog_line(read_first_line(file.path)) else "text"


def _file_reader(file: SourceFile, kind: FileKind, text_field: str) -> DocumentStream:
    if kind == "text":
        return lambda: split_documents(file_lines(file))
    if kind == "dailydialog":
        return lambda: dailydialog_documents(file_lines(file))
    records = jsonl_records if kind == "jsonl" else json_records
    return lambda: record_documents(records(file), text_field, file.origin, "line")
