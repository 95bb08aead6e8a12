"""JSON and JSONL records (sources/records.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_helpers import all_documents, open_source, raises_data_error, write


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
