"""Dialog corpora as `Conversation`s: DailyDialog's text files (one dialogue per line, `__eou__`
after each utterance, label files beside them) and the turns of ProSocial Dialog, grouped by
dialogue. The JSON layouts of both (a `dialog` list, `context`/`response` fields) are read in
`records`; this module turns their utterances into conversations."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Any

from tinygpt.data.chat_format import Conversation, detokenize_dailydialog, pair_utterances

DAILYDIALOG_EOU = "__eou__"  # DailyDialog's end-of-utterance marker
DAILYDIALOG_LABELS = re.compile(r"dialogues_(act|emotion)_.*\.txt")  # labels, not text

DialogTurn = tuple[Any, str, str]  # (dialogue id, user, bot)


def is_dailydialog_label_file(name: str) -> bool:
    """DailyDialog's per-utterance act and emotion labels: numbers, never training text."""
    return DAILYDIALOG_LABELS.fullmatch(name) is not None


def is_dailydialog_line(line: bytes) -> bool:
    """A file's first line decides whether it is DailyDialog text or plain text."""
    return DAILYDIALOG_EOU.encode() in line


def dailydialog_documents(lines: Iterable[str]) -> Iterator[Conversation]:
    """One dialogue per line, utterances ending in __eou__, speakers alternating from A (User)."""
    for line in lines:
        conversation = dailydialog_conversation(line.split(DAILYDIALOG_EOU))
        if conversation.turns:
            yield conversation


def dailydialog_conversation(utterances: Iterable[str]) -> Conversation:
    """DailyDialog's tokenized utterances (`Hi , Tom !`) as turns of readable text; empty
    utterances are dropped before the speakers are paired."""
    detokenized = (detokenize_dailydialog(utterance) for utterance in utterances)
    return pair_utterances(utterance for utterance in detokenized if utterance)


def prosocial_conversations(turns: Iterable[DialogTurn]) -> Iterator[Conversation]:
    """Consecutive turns of one dialogue id are one conversation; a turn missing either side is
    dropped, and a dialogue left without turns gives nothing."""
    for _, group in itertools.groupby(turns, key=lambda turn: turn[0]):
        pairs = tuple((user, bot) for _, user, bot in group if user and bot)
        if pairs:
            yield Conversation(pairs)
