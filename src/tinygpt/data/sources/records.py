"""JSON records as documents: a .jsonl file (a record per line), a .json file (a list of records,
or one) or a Hugging Face dataset's rows. A source's first record decides its layout:

- `text`: a text field (--text_field, default "text") per record;
- `dailydialog`: a `dialog` list of utterances per record (HF daily_dialog);
- `prosocial_rows`: `context`/`response` strings, one turn per record (HF
  allenai/prosocial-dialog), consecutive rows of one `dialogue_id` being one conversation;
- `prosocial_columns`: the same turns as one object of columns (DialogStudio's sample).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from tinygpt.data.sources.dialogs import (
    DialogTurn,
    dailydialog_conversation,
    prosocial_conversations,
)
from tinygpt.data.sources.documents import Document
from tinygpt.data.sources.text_files import SourceFile, file_lines
from tinygpt.errors import DataError

RecordLayout = Literal["text", "dailydialog", "prosocial_columns", "prosocial_rows"]
LocatedRecord = tuple[int, Any]  # (line or row number, record)

_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def jsonl_records(file: SourceFile) -> Iterator[LocatedRecord]:
    for number, line in enumerate(file_lines(file), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{file.origin} line {number} is not valid JSON ({err.msg}, column {err.colno}); "
                "fix or remove that line"
            ) from None
        yield number, record


def json_records(file: SourceFile) -> Iterator[LocatedRecord]:
    """The records of a .json file (a list of them, or one), each with the line it starts on.

    A .json file is read whole; a corpus too big for memory belongs in .jsonl.
    """
    text = "".join(file_lines(file))
    decoder = json.JSONDecoder()
    position = _JSON_SPACE.match(text).end()
    is_list = text.startswith("[", position)
    if is_list:
        position = _JSON_SPACE.match(text, position + 1).end()
    line, counted = 1, 0
    while not (is_list and text.startswith("]", position)):
        try:
            record, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{file.origin} is not valid JSON ({err.msg}, line {err.lineno} column "
                f"{err.colno}); fix the file"
            ) from None
        line, counted = line + text.count("\n", counted, position), position
        yield line, record
        position = _JSON_SPACE.match(text, end).end()
        if not is_list:
            break
        if text.startswith(",", position):
            position = _JSON_SPACE.match(text, position + 1).end()
        elif not text.startswith("]", position):
            at_line = line + text.count("\n", counted, position)
            raise DataError(
                f"{file.origin} is not valid JSON (expected ',' or ']' on line {at_line}); "
                "fix the file"
            )


def peek_layout(file: SourceFile, is_jsonl: bool, text_field: str) -> RecordLayout:
    """The layout of a JSON(L) file, from its first record alone."""
    records = jsonl_records(file) if is_jsonl else json_records(file)
    first = next(records, None)
    records.close()
    if first is None:
        raise DataError(f"{file.origin} holds no JSON records; give records with a text field")
    return record_layout(first[1], text_field, f"{file.origin} line {first[0]}")


def record_layout(record: Any, text_field: str, where: str) -> RecordLayout:
    """Decided by a source's first record, so that later records missing a field are errors."""
    _check_is_object(record, where)
    if text_field in record:
        return "text"
    if isinstance(record.get("dialog"), list):
        return "dailydialog"  # HF daily_dialog: a list of utterances per row
    if "context" in record and "response" in record:
        # HF allenai/prosocial-dialog has one row per turn; DialogStudio's sample holds the
        # same rows as one object of columns
        return "prosocial_columns" if isinstance(record["context"], list) else "prosocial_rows"
    raise _missing_field(record, text_field, where)


def record_documents(
    records: Iterator[LocatedRecord], text_field: str, origin: str, unit: str
) -> Iterator[Document]:
    """The documents of `records` in the layout of the first; `unit` ("line", "row") names
    where a bad record is in error messages."""
    first = next(records, None)
    if first is None:
        return
    layout = record_layout(first[1], text_field, f"{origin} {unit} {first[0]}")
    located = ((f"{origin} {unit} {n}", r) for n, r in itertools.chain([first], records))
    if layout == "text":
        for where, record in located:
            text = _field(record, text_field, str, where)
            if text.strip():
                yield text
    elif layout == "dailydialog":
        for where, record in located:
            conversation = dailydialog_conversation(_field(record, "dialog", list, where))
            if conversation.turns:
                yield conversation
    else:
        yield from prosocial_conversations(
            _prosocial_turns(located, is_columns=layout == "prosocial_columns")
        )


def _prosocial_turns(located: Iterable[tuple[str, Any]], is_columns: bool) -> Iterator[DialogTurn]:
    """(dialogue id, user, bot) per turn; consecutive turns of one dialogue_id are one
    conversation. Without a dialogue_id a row is a conversation, a column record one too."""
    for index, (where, record) in enumerate(located):
        if not is_columns:
            user = _field(record, "context", str, where)
            bot = _field(record, "response", str, where)
            yield record.get("dialogue_id", ("row", index)), user.strip(), bot.strip()
            continue
        users = _field(record, "context", list, where)
        bots = _field(record, "response", list, where)
        ids = record.get("dialogue_id") or [0] * len(users)
        for dialogue_id, user, bot in zip(ids, users, bots, strict=False):
            yield (index, dialogue_id), str(user).strip(), str(bot).strip()


def _check_is_object(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{where} is a JSON {type(record).__name__}, not an object; give records")


def _missing_field(record: dict[str, Any], name: str, where: str) -> DataError:
    fields = ", ".join(record) or "none"
    return DataError(
        f"{where} has no {name!r} field (its fields: {fields}); set --text_field to the field "
        "that holds the text"
    )


def _field(record: dict[str, Any], name: str, kind: type, where: str) -> Any:
    _check_is_object(record, where)
    if name not in record:
        raise _missing_field(record, name, where)
    value = record[name]
    if not isinstance(value, kind):
        raise DataError(
            f"{where}: field {name!r} is a {type(value).__name__}, expected {kind.__name__}"
        )
    return value
