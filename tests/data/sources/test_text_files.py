"""One file checked as UTF-8 text and hashed (sources/text_files.py)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from corpus_helpers import all_documents, open_source, raises_data_error, write

from tinygpt.data.sources.text_files import scan_file
from tinygpt.errors import DataError


def test_local_file_is_read_unchanged_except_for_a_bom(tmp_path: Path):
    path = tmp_path / "corpus.txt"
    text = "line one\r\nline two\n\ttabs and é  \n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    corpus = open_source(path)
    assert all_documents(corpus) == [text]
    digest, size = scan_file(path, str(path))
    assert digest == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert size == len(text.encode("utf-8")) + 3  # the BOM is read, not hashed
    assert corpus.origin == str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b" \n\t\n", "only whitespace"),
        (b"text\x00\x01\x02 more", "looks binary"),
        (b"caf\xc3\xa9 and caf\xe9", "not valid UTF-8 (bad byte at offset 13)"),
        (b"\xef\xbb\xbfcaf\xe9", "not valid UTF-8 (bad byte at offset 6)"),
        (b"caf\xc3", "not valid UTF-8 (bad byte at offset 3)"),
    ],
    ids=["missing", "empty", "whitespace", "binary", "latin1", "bom-latin1", "cut-character"],
)
def test_bad_local_files_raise_a_data_error(tmp_path: Path, content: bytes | None, message: str):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        open_source(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b" \n\t\n", "only whitespace"),
        (b"text\x00\x01\x02 more", "looks binary"),
        (b"caf\xc3\xa9 and caf\xe9", "not valid UTF-8 (bad byte at offset 13)"),
        (b"\xef\xbb\xbfcaf\xe9", "not valid UTF-8 (bad byte at offset 6)"),
        (b"x" * (1 << 20) + b"\xc3", "not valid UTF-8 (bad byte at offset 1048576)"),
    ],
    ids=["empty", "whitespace", "binary", "latin1", "bom-latin1", "cut-after-a-chunk"],
)
def test_every_file_of_a_folder_is_checked(tmp_path: Path, content: bytes, message: str):
    write(tmp_path / "books" / "a_good.txt", "fine text")
    bad = tmp_path / "books" / "b_bad.txt"
    bad.write_bytes(content)
    with raises_data_error(f"{bad} {message}" if message.startswith("is") else message) as err:
        open_source(tmp_path / "books")
    assert str(bad) in str(err.value)
    assert "\n" not in str(err.value)
