"""`open_corpus`: fingerprints, --max_documents, sources joined with + (sources/corpus.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_helpers import all_documents, open_source, write

from tinygpt.config import DataConfig
from tinygpt.data.sources import open_corpus
from tinygpt.directories import default_cache_dir
from tinygpt.errors import DataError


def test_default_cache_dir_follows_the_environment(cache_dir: Path):
    assert default_cache_dir() == cache_dir


def test_max_documents_stops_each_split(tmp_path: Path):
    write(tmp_path / "data" / "train" / "t.txt", "a\n<|endoftext|>\nb\n<|endoftext|>\nc\n")
    write(tmp_path / "data" / "validation" / "v.txt", "x\n<|endoftext|>\ny\n")
    corpus = open_source(tmp_path / "data", max_documents=1)
    assert all_documents(corpus) == ["a"]
    assert all_documents(corpus, "validation") == ["x"]


def test_fingerprint_follows_the_content_not_the_path(tmp_path: Path):
    path = write(tmp_path / "a.txt", "some text")
    first = open_source(path).fingerprint
    assert open_source(write(tmp_path / "copy.txt", "some text")).fingerprint == first
    write(path, "some text, changed")
    assert open_source(path).fingerprint != first
    assert open_source(path, max_documents=5).fingerprint != open_source(path).fingerprint


def test_an_empty_part_of_a_joined_source_is_refused(tmp_path: Path):
    with pytest.raises(DataError, match="empty part"):
        open_corpus(DataConfig(source="tinyshakespeare+"))


def test_fixture_sources_joined_with_plus_become_one_corpus(dialog_fixtures: Path):
    """The joined DailyDialog and ProSocial sources of the dialog-chatbot spec, at the size of
    the test fixtures."""
    dailydialog = dialog_fixtures / "dailydialog"
    prosocial = dialog_fixtures / "prosocial_dialog" / "examples.json"
    joined = open_corpus(DataConfig(source=f"{dailydialog}+{prosocial}", format="dialog"))
    alone = open_corpus(DataConfig(source=str(dailydialog), format="dialog"))
    assert joined.splits == ("train", "validation")
    train = list(joined.documents("train"))
    assert len(train) == 50 + 2  # DailyDialog's train split, then ProSocial's two dialogues
    prosocial_alone = open_corpus(DataConfig(source=str(prosocial), format="dialog"))
    assert train[-2:] == list(prosocial_alone.documents("train"))
    assert len(list(joined.documents("validation"))) == 10
    assert joined.fingerprint != alone.fingerprint
    assert joined.total_bytes("train") > alone.total_bytes("train")


def test_sources_joined_with_plus_become_one_corpus(shared_data: Path):
    dailydialog = shared_data / "dailydialog"
    prosocial = shared_data / "prosocial_dialog" / "original_examples.json"
    joined = open_corpus(DataConfig(source=f"{dailydialog}+{prosocial}", format="dialog"))
    alone = open_corpus(DataConfig(source=str(dailydialog), format="dialog"))
    assert joined.splits == ("train", "validation")
    train = list(joined.documents("train"))
    assert len(train) == 11_021 + 2  # DailyDialog's train split, then ProSocial's two dialogues
    assert train[-2:] == list(open_corpus(DataConfig(source=str(prosocial), format="dialog"))
                              .documents("train"))  # fmt: skip
    assert len(list(joined.documents("validation"))) == 1_000
    assert joined.fingerprint != alone.fingerprint
    assert joined.total_bytes("train") > alone.total_bytes("train")
