"""Small corpora and helpers shared by the tests of tinygpt.data (sources and prepare)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tinygpt.config import DataConfig
from tinygpt.data.sources import Corpus, Document, open_corpus
from tinygpt.errors import DataError

STORIES = "\nOnce there was a cat.\nIt sat.  \n<|endoftext|>\nA dog ran.\n<|endoftext|>\n"
DIALOG_LINE = "Hi , Tom ! __eou__ Hello ! How ’ s it going ? __eou__ Fine . __eou__\n"  # noqa: RUF001
TEXT = "hello world, this is a small corpus.\n" * 30  # 1110 characters, no document separator
CAT_STORIES = [f"Story {i}: once upon a time a cat named Tom{i} found a hat." for i in range(200)]


def open_source(source: Path | str, **fields: Any) -> Corpus:
    return open_corpus(DataConfig(source=str(source), **fields))


def all_documents(corpus: Corpus, split: str = "train") -> list[Document]:
    return list(corpus.documents(split))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def raises_data_error(match: str) -> Any:
    return pytest.raises(DataError, match=re.escape(match))
