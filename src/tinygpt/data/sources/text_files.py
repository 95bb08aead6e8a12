"""One file of a source: checked to be UTF-8 text and hashed in one streamed pass when the
corpus is opened (so errors come early, naming the file and the byte), then read line by line
whenever documents are asked for."""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tinygpt.data.sources.builtin import BUILTIN_CORPORA
from tinygpt.errors import DataError

BINARY_SNIFF_BYTES = 8192  # a NUL byte this early means the file is not text
UTF8_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    path: Path
    origin: str  # the path as the user will recognise it, or the URL it came from
    name: str  # inside a folder or glob: decides order, so it is part of the fingerprint


def file_lines(file: SourceFile) -> Iterator[str]:
    """Lines with their endings, so joined they give the file back (BOM excepted)."""
    try:
        with file.path.open(encoding="utf-8-sig", newline="") as handle:
            yield from handle
    except (OSError, UnicodeError) as err:
        raise DataError(
            f"could not read {file.origin} ({err}); did it change while read?"
        ) from None


def scan_file(path: Path, origin: str) -> tuple[str, int]:
    """sha256 (after any BOM) and size, checking in one streamed pass that the file is text."""
    _check_exists(path, origin)
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


def _check_exists(path: Path, origin: str) -> None:
    if not path.exists():
        raise DataError(
            f"{origin} does not exist; give a text file, folder, glob, JSON(L) file, http(s) URL, "
            f"hf:NAME or a built-in corpus name ({', '.join(BUILTIN_CORPORA)})"
        )


def read_first_line(path: Path) -> bytes:
    """The start of a file's first line (at most BINARY_SNIFF_BYTES), to tell formats apart."""
    with path.open("rb") as handle:
        return handle.read(BINARY_SNIFF_BYTES).split(b"\n", 1)[0]


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
    """Decode one chunk; a bad byte is reported at its offset in the file (BOM included), not
    in the chunk."""
    pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
    try:
        return decoder.decode(chunk, final=is_final)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{origin} is not valid UTF-8 (bad byte at offset {offset - pending + err.start}); "
            "convert it to UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None
