"""Conversations: DailyDialog and ProSocial Dialog (sources/dialogs.py, sources/records.py)."""

from __future__ import annotations

import json
from pathlib import Path

from corpus_helpers import (
    DIALOG_LINE,
    STORIES,
    all_documents,
    open_source,
    raises_data_error,
    write,
)

from tinygpt.data.chat_format import Conversation


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


def test_a_folder_in_dailydialogs_layout_splits_without_its_test_folder(dialog_fixtures: Path):
    """The real folder's layout at the fixture's size, for a clone without ../shared/data."""
    root = dialog_fixtures / "dailydialog"
    corpus = open_source(root, format="dialog")
    assert corpus.splits == ("train", "validation")
    train, validation = all_documents(corpus), all_documents(corpus, "validation")
    assert (len(train), len(validation)) == (50, 10)
    first = validation[0]
    assert isinstance(first, Conversation)
    assert first.turns[0] == (
        "Good afternoon. Do you have a room for tonight?",
        "Yes, a single or a double?",
    )
    dialogues = root / "validation" / "dialogues_validation.txt"
    assert corpus.total_bytes("validation") == dialogues.stat().st_size  # not the labels


def test_prosocial_sample_groups_its_two_dialogues(dialog_fixtures: Path):
    path = dialog_fixtures / "prosocial_dialog" / "examples.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    documents = all_documents(open_source(path, format="dialog"))
    conversations = [d for d in documents if isinstance(d, Conversation)]
    assert len(conversations) == len(documents)
    assert conversations[0].turns[0] == (record["context"][0], record["response"][0])
    assert [len(c.turns) for c in conversations] == [3, 2]  # dialogue_id 0, then 1
