"""Hugging Face datasets, never from the network (sources/hub.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest
from corpus_helpers import all_documents, open_source, raises_data_error

from tinygpt.config import DataConfig
from tinygpt.data.chat_format import Conversation, render_text
from tinygpt.data.sources import open_corpus


class CountingRows:
    """A stand-in for a streamed dataset that records how many rows were pulled."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.pulled = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            self.pulled += 1
            yield row


def fake_hub(monkeypatch: pytest.MonkeyPatch, splits: dict[str, Any]) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def load_dataset(name: str, **kwargs: Any) -> Any:
        calls.append((name, kwargs))
        return datasets.IterableDatasetDict(splits) if splits else splits

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def iterable(rows: list[dict[str, Any]]) -> datasets.IterableDataset:
    return datasets.Dataset.from_list(rows).to_iterable_dataset()


def test_hub_unreachable_asks_for_a_local_path(monkeypatch: pytest.MonkeyPatch):
    def offline(name: str, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'roneneldan/TinyStories' on the Hub\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with raises_data_error(
        "could not load hf:roneneldan/TinyStories from the Hugging Face hub (Couldn't reach "
        "'roneneldan/TinyStories' on the Hub); download the files and pass a local path: "
        "--data path/to/file.txt|.jsonl|folder"
    ):
        open_source("hf:roneneldan/TinyStories")


def test_hf_text_dataset_streams_its_train_and_validation_splits(monkeypatch: pytest.MonkeyPatch):
    calls = fake_hub(
        monkeypatch,
        {
            "train": iterable([{"text": "story one"}, {"text": "story two"}]),
            "validation": iterable([{"text": "held out"}]),
        },
    )
    corpus = open_source("hf:roneneldan/TinyStories")
    assert calls == [("roneneldan/TinyStories", {"streaming": True})]
    assert corpus.splits == ("train", "validation")
    assert all_documents(corpus) == ["story one", "story two"]
    assert all_documents(corpus, "validation") == ["held out"]
    assert corpus.total_bytes("train") is None


def test_hf_max_documents_stops_the_stream(monkeypatch: pytest.MonkeyPatch):
    rows = CountingRows([{"text": f"story {i}"} for i in range(1000)])
    fake_hub(monkeypatch, {"train": rows})
    corpus = open_source("hf:stories", max_documents=3)
    rows.pulled = 0
    assert all_documents(corpus) == ["story 0", "story 1", "story 2"]
    assert rows.pulled <= 4


def test_hf_daily_dialog_rows_become_conversations(monkeypatch: pytest.MonkeyPatch):
    row = {"dialog": ["Hi , Tom ! ", "Hello . ", "Bye ."], "act": [1, 1, 1]}
    fake_hub(monkeypatch, {"train": iterable([row])})
    corpus = open_source("hf:daily_dialog", format="dialog")
    assert all_documents(corpus) == [Conversation((("Hi, Tom!", "Hello."),))]


def test_hf_prosocial_rows_are_grouped_by_dialogue(monkeypatch: pytest.MonkeyPatch):
    rows = [
        {"context": "u1", "response": "b1", "dialogue_id": 0, "response_id": 0},
        {"context": "u2", "response": "b2", "dialogue_id": 0, "response_id": 1},
        {"context": "v1", "response": "w1", "dialogue_id": 1, "response_id": 0},
    ]
    fake_hub(monkeypatch, {"train": iterable(rows)})
    documents = all_documents(open_source("hf:allenai/prosocial-dialog"))
    assert documents == [
        render_text(Conversation((("u1", "b1"), ("u2", "b2")))),
        render_text(Conversation((("v1", "w1"),))),
    ]


def test_hf_rows_without_the_text_field_name_the_columns(monkeypatch: pytest.MonkeyPatch):
    fake_hub(monkeypatch, {"train": iterable([{"story": "x"}])})
    with raises_data_error("hf:stories train split row 1 has no 'text' field (its fields: story)"):
        open_source("hf:stories")


def test_hf_text_dataset_refuses_dialog_format(monkeypatch: pytest.MonkeyPatch):
    fake_hub(monkeypatch, {"train": iterable([{"text": "x"}])})
    with raises_data_error("--format dialog needs conversations, but hf:stories is plain text"):
        open_source("hf:stories", format="dialog")


def test_a_local_dataset_in_the_hugging_face_layout_loads_through_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The real `datasets.load_dataset`, offline, on parquet shards named as on the hub."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    (tmp_path / "stories" / "data").mkdir(parents=True)
    for split, count in (("train", 40), ("validation", 4)):
        rows = [
            {"text": f"{split} story {i}: Tom found a red ball.", "id": i} for i in range(count)
        ]
        datasets.Dataset.from_list(rows).to_parquet(
            tmp_path / "stories" / "data" / f"{split}-00000-of-00001.parquet"
        )
    corpus = open_corpus(DataConfig(source=f"hf:{tmp_path / 'stories'}"))
    assert corpus.splits == ("train", "validation")
    train = list(corpus.documents("train"))
    assert len(train) == 40 and train[3] == "train story 3: Tom found a red ball."
    assert list(corpus.documents("validation"))[-1].startswith("validation story 3")
