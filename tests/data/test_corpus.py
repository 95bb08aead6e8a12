from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest

from tinygpt.config import DataConfig
from tinygpt.data.chat_format import Conversation, render_text
from tinygpt.data.sources import Corpus, Document, open_corpus, read_source
from tinygpt.errors import DataError

STORIES = "\nOnce there was a cat.\nIt sat.  \n<|endoftext|>\nA dog ran.\n<|endoftext|>\n"
DIALOG_LINE = "Hi , Tom ! __eou__ Hello ! How ’ s it going ? __eou__ Fine . __eou__\n"  # noqa: RUF001


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


# ----------------------------------------------------------------------------------------------
# Plain text: files, folders, globs, the built-in corpus


def test_endoftext_lines_split_documents_and_are_dropped(tmp_path: Path):
    corpus = open_source(write(tmp_path / "stories.txt", STORIES))
    assert all_documents(corpus) == ["Once there was a cat.\nIt sat.", "A dog ran."]
    assert corpus.splits == ("train",)
    assert corpus.total_bytes("train") == len(STORIES.encode("utf-8"))


def test_windows_line_endings_still_separate_documents(tmp_path: Path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"one\r\n<|endoftext|>\r\ntwo\r\n")
    assert all_documents(open_source(path)) == ["one", "two"]


def test_a_file_without_separators_is_one_unchanged_document(small_text_file: Path):
    assert all_documents(open_source(small_text_file)) == [read_source(str(small_text_file)).text]


def test_builtin_corpus_is_one_document():
    corpus = open_source("tinyshakespeare")
    assert all_documents(corpus) == [read_source("tinyshakespeare").text]
    assert corpus.total_bytes("train") == 1_115_394


def test_documents_gives_a_fresh_iterator_each_call(tmp_path: Path):
    corpus = open_source(write(tmp_path / "stories.txt", STORIES))
    assert all_documents(corpus) == all_documents(corpus)


def test_folder_reads_txt_and_jsonl_files_below_it_in_name_order(tmp_path: Path):
    write(tmp_path / "books" / "b.txt", "second")
    write(tmp_path / "books" / "a" / "z.txt", "first")
    write(tmp_path / "books" / "c.jsonl", '{"text": "third"}\n')
    write(tmp_path / "books" / "notes.md", "not read")
    write(tmp_path / "books" / ".hidden" / "x.txt", "not read")
    assert all_documents(open_source(tmp_path / "books")) == ["first", "second", "third"]


def test_glob_reads_the_matching_files_in_order(tmp_path: Path):
    write(tmp_path / "b.txt", "b")
    write(tmp_path / "a.txt", "a")
    write(tmp_path / "c.md", "c")
    assert all_documents(open_source(tmp_path / "*.txt")) == ["a", "b"]


def test_folder_with_train_and_validation_folders_keeps_its_split(tmp_path: Path):
    write(tmp_path / "data" / "train" / "t.txt", "train text")
    write(tmp_path / "data" / "validation" / "v.txt", "val text")
    write(tmp_path / "data" / "test" / "x.txt", "held out")
    corpus = open_source(tmp_path / "data")
    assert corpus.splits == ("train", "validation")
    assert all_documents(corpus) == ["train text"]
    assert all_documents(corpus, "validation") == ["val text"]


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


# ----------------------------------------------------------------------------------------------
# JSON and JSONL records


def test_jsonl_records_give_their_text_field(tmp_path: Path):
    lines = ['{"text": "one", "id": 1}', "", '{"text": "two", "id": 2}']
    path = write(tmp_path / "data.jsonl", "\n".join(lines) + "\n")
    assert all_documents(open_source(path)) == ["one", "two"]
    body = write(tmp_path / "body.jsonl", '{"body": "x"}\n')
    assert all_documents(open_source(body, text_field="body")) == ["x"]


def test_json_holds_a_list_of_records_or_one_record(tmp_path: Path):
    many = write(tmp_path / "many.json", json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    one = write(tmp_path / "one.json", json.dumps({"text": "only"}))
    assert all_documents(open_source(many)) == ["a", "b"]
    assert all_documents(open_source(one)) == ["only"]


def test_text_field_is_part_of_the_fingerprint(tmp_path: Path):
    path = write(tmp_path / "data.jsonl", '{"text": "a", "title": "b"}\n')
    assert open_source(path).fingerprint != open_source(path, text_field="title").fingerprint


def test_jsonl_record_without_the_field_names_field_file_line_and_fields(tmp_path: Path):
    path = write(tmp_path / "data.jsonl", '{"text": "ok"}\n{"body": "x", "id": 3}\n')
    corpus = open_source(path)
    with raises_data_error(f"{path} line 2 has no 'text' field (its fields: body, id)"):
        all_documents(corpus)


def test_first_record_without_the_field_fails_at_open(tmp_path: Path):
    path = write(tmp_path / "data.jsonl", '{"body": "x"}\n')
    with raises_data_error(f"{path} line 1 has no 'text' field (its fields: body)") as err:
        open_source(path)
    assert "--text_field" in str(err.value)


def test_json_list_record_errors_point_at_its_line(tmp_path: Path):
    path = write(tmp_path / "data.json", '[\n  {"text": "a"},\n\n  {"title": "b"}\n]\n')
    with raises_data_error(f"{path} line 4 has no 'text' field (its fields: title)"):
        all_documents(open_source(path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "a"}\n{"text": \n', "line 2 is not valid JSON"),
        ("bad.json", '[{"text": "a"} {"text": "b"}]', "expected ',' or ']' on line 1"),
        ("bad.json", '{"text": ', "is not valid JSON (Expecting value, line 1"),
        ("list.jsonl", '["a", "b"]\n', "line 1 is a JSON list, not an object"),
        ("number.jsonl", '{"text": 3}\n', "field 'text' is a int, expected str"),
        ("none.json", "[]", "holds no JSON records"),
    ],
)
def test_malformed_json_raises_a_data_error(tmp_path: Path, name: str, content: str, message: str):
    path = write(tmp_path / name, content)
    with raises_data_error(message) as err:
        all_documents(open_source(path))
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------
# Conversations: DailyDialog, ProSocial Dialog


def test_dailydialog_lines_become_detokenized_turns(tmp_path: Path):
    path = write(tmp_path / "dialogues_train.txt", DIALOG_LINE + "Lonely . __eou__\n")
    (conversation,) = all_documents(open_source(path, format="dialog"))
    assert conversation == Conversation((("Hi, Tom!", "Hello! How\u2019s it going?"),))


def test_dialog_source_is_rendered_for_text_format(tmp_path: Path):
    path = write(tmp_path / "dialogues_train.txt", DIALOG_LINE)
    (text,) = all_documents(open_source(path))
    assert text == "<s> User: Hi, Tom! <sep> Bot: Hello! How\u2019s it going? </s>"


def test_dailydialog_folder_has_train_and_validation_and_skips_labels(tmp_path: Path):
    root = tmp_path / "dailydialog"
    for split in ("train", "validation", "test"):
        write(root / split / f"dialogues_{split}.txt", f"{split} a __eou__ {split} b __eou__\n")
        write(root / split / f"dialogues_act_{split}.txt", "1 2\n")
        write(root / split / f"dialogues_emotion_{split}.txt", "0 0\n")
    corpus = open_source(root, format="dialog")
    assert corpus.splits == ("train", "validation")
    assert all_documents(corpus) == [Conversation((("train a", "train b"),))]
    assert all_documents(corpus, "validation") == [
        Conversation((("validation a", "validation b"),))
    ]


def test_dailydialog_label_file_is_refused(tmp_path: Path):
    path = write(tmp_path / "dialogues_act_train.txt", "1 2\n")
    with raises_data_error(f"{path} holds DailyDialog labels, not text"):
        open_source(path)


def test_prosocial_columns_group_turns_by_dialogue_id(tmp_path: Path):
    record = {
        "context": ["u1", "u2", "v1"],
        "response": ["b1", "b2", "w1"],
        "dialogue_id": [7, 7, 8],
    }
    path = write(tmp_path / "prosocial.json", json.dumps(record))
    assert all_documents(open_source(path, format="dialog")) == [
        Conversation((("u1", "b1"), ("u2", "b2"))),
        Conversation((("v1", "w1"),)),
    ]


def test_prosocial_rows_group_consecutive_rows_of_a_dialogue(tmp_path: Path):
    rows = [
        {"context": "u1", "response": "b1", "dialogue_id": 0},
        {"context": "u2", "response": "b2", "dialogue_id": 0},
        {"context": "v1", "response": "w1", "dialogue_id": 1},
    ]
    path = write(tmp_path / "prosocial.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    documents = all_documents(open_source(path, format="dialog"))
    assert [len(c.turns) for c in documents if isinstance(c, Conversation)] == [2, 1]


def test_dialog_format_refuses_plain_text(tmp_path: Path):
    path = write(tmp_path / "stories.txt", STORIES)
    with raises_data_error(f"--format dialog needs conversations, but {path} is plain text"):
        open_source(path, format="dialog")


def test_mixing_conversations_and_text_is_refused(tmp_path: Path):
    write(tmp_path / "mixed" / "a.txt", DIALOG_LINE)
    write(tmp_path / "mixed" / "b.txt", "plain")
    with raises_data_error("holds conversations but"):
        open_source(tmp_path / "mixed")


# ----------------------------------------------------------------------------------------------
# Errors on files, also inside folders


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


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing.txt", "missing.txt does not exist"),
        (lambda root: (root / "books").mkdir() or root / "books", "has no .txt or .jsonl files"),
        (lambda root: root / "nothing" / "*.txt", "matches no file"),
    ],
)
def test_missing_sources_raise_a_data_error(tmp_path: Path, make: Any, message: str):
    with raises_data_error(message):
        open_source(make(tmp_path))


# ----------------------------------------------------------------------------------------------
# Hugging Face datasets, never from the network


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


# ----------------------------------------------------------------------------------------------
# The real files in shared/data


def test_tinystories_v2_head_splits_on_endoftext(shared_data: Path):
    documents = all_documents(open_source(shared_data / "tinystories_v2_train_head.txt"))
    assert len(documents) == 1728  # 1,727 whole stories and the cut-off last one
    assert str(documents[0]).startswith("Once upon a time there was a little boy named Ben.")
    assert not any("<|endoftext|>" in str(d) for d in documents)


def test_cs336_sample_has_five_stories(shared_data: Path):
    documents = all_documents(open_source(shared_data / "tinystories_eot_sample.txt"))
    assert len(documents) == 5
    head = all_documents(open_source(shared_data / "tinystories_v2_train_head.txt"))
    squash = lambda text: " ".join(str(text).split())  # noqa: E731
    assert [squash(d) for d in documents] == [squash(d) for d in head[:5]]


def test_tinyshakespeare_file_is_one_document(shared_data: Path):
    path = shared_data / "tinyshakespeare.txt"
    assert all_documents(open_source(path)) == [path.read_text(encoding="utf-8")]


def test_dailydialog_folder_splits(shared_data: Path):
    corpus = open_source(shared_data / "dailydialog", format="dialog")
    assert corpus.splits == ("train", "validation")
    train, validation = all_documents(corpus), all_documents(corpus, "validation")
    assert (len(train), len(validation)) == (11_021, 1_000)
    first = validation[0]
    assert isinstance(first, Conversation)
    assert first.turns[0] == (
        "Good morning, sir. Is there a bank near here?",
        "There is one. 5 blocks away from here?",
    )
    assert corpus.total_bytes("validation") == 558_030  # the dialogues file only, not labels


def test_prosocial_sample_groups_its_two_dialogues(shared_data: Path):
    path = shared_data / "prosocial_dialog" / "original_examples.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    documents = all_documents(open_source(path, format="dialog"))
    conversations = [d for d in documents if isinstance(d, Conversation)]
    assert len(conversations) == len(documents)
    assert conversations[0].turns[0] == (record["context"][0], record["response"][0])
    assert [len(c.turns) for c in conversations] == [3, 2]  # dialogue_id 0, then 1


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


def test_an_empty_part_of_a_joined_source_is_refused(tmp_path: Path):
    with pytest.raises(DataError, match="empty part"):
        open_corpus(DataConfig(source="tinyshakespeare+"))


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
