from __future__ import annotations

from pathlib import Path

import pytest
from corpus_helpers import CAT_STORIES, TEXT


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """TEXT in a file: one document, so it is split by position."""
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def stories_file(tmp_path: Path) -> Path:
    """CAT_STORIES separated by <|endoftext|> lines: split by document."""
    path = tmp_path / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(CAT_STORIES) + "\n<|endoftext|>\n", encoding="utf-8")
    return path
