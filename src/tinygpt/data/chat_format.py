"""Conversations as training text, in the format of the dialog-chatbot spec (docs/specs.md):
`<s> User: ... <sep> Bot: ... </s>`.

One turn renders as `<s> User: {user} <sep> Bot: {bot} </s>`: every marker is set off from the
text beside it by exactly one space, and the turns of a conversation are joined by a newline.
Encoding walks the same segments as rendering, so `decode(encode_conversation(c)[0])` is
`render_text(c)` for any tokenizer whose special tokens decode to their own text.

Segments are encoded one at a time, never as one string: a marker then becomes its special id
where the tokenizer has one, user text can never turn into a marker, and the reply mask lines up
with token boundaries exactly. A prompt from `history_prompt` is a prefix of the ids that
`encode_conversation` gives for the same turns, so generation sees what training saw.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tinygpt.tokenizers.base import Tokenizer

BOS = "<s>"  # opens a turn
SEP = "<sep>"  # ends the user's message
EOS = "</s>"  # ends the bot's reply: generation stops here
CHAT_MARKERS = (BOS, SEP, EOS)  # trained tokenizers should reserve these as special tokens
TURN_SEPARATOR = "\n"


@dataclass(frozen=True)
class Conversation:
    """(user, bot) turns in order; every turn has a reply, so every turn teaches something."""

    turns: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Segment:
    text: str
    is_marker: bool  # inserted as a special id when the tokenizer has one
    is_reply: bool  # what the bot says: the tokens a chat model learns to produce


def pair_utterances(utterances: Iterable[str]) -> Conversation:
    """Alternating speakers A, B, A, B... as (A, B) turns.

    An odd last utterance is dropped: it has no reply to learn, and a turn without one could not
    be rendered in the `<s> ... </s>` format.
    """
    spoken = list(utterances)
    return Conversation(tuple(zip(spoken[0::2], spoken[1::2], strict=False)))


def render_text(conversation: Conversation) -> str:
    """The conversation as plain text, for tokenizers and models that know no special tokens."""
    return "".join(segment.text for segment in _segments(conversation.turns))


def encode_conversation(
    conversation: Conversation, tokenizer: Tokenizer
) -> tuple[list[int], list[bool]]:
    """Token ids, and per token whether it is a bot reply or the closing `</s>`.

    The mask marks the tokens a chat model should be trained to produce; the user's words and
    the markers before the reply are context only.
    """
    ids: list[int] = []
    mask: list[bool] = []
    for segment in _segments(conversation.turns):
        piece = _encode_segment(segment, tokenizer)
        ids += piece
        mask += [segment.is_reply] * len(piece)
    return ids, mask


def history_prompt(
    conversation_so_far: Conversation, user_message: str, tokenizer: Tokenizer
) -> list[int]:
    """Ids of the turns so far plus the new message, ending with `<sep> Bot:` for the reply."""
    segments = _segments(conversation_so_far.turns, next_user=user_message)
    return [token for segment in segments for token in _encode_segment(segment, tokenizer)]


def _segments(turns: Sequence[tuple[str, str]], next_user: str | None = None) -> Iterator[_Segment]:
    for index, (user, bot) in enumerate(turns):
        if index:
            yield _Segment(TURN_SEPARATOR, is_marker=False, is_reply=False)
        yield from _turn_segments(user, bot)
    if next_user is not None:
        if turns:
            yield _Segment(TURN_SEPARATOR, is_marker=False, is_reply=False)
        yield from _turn_segments(next_user, None)


def _turn_segments(user: str, bot: str | None) -> Iterator[_Segment]:
    yield _Segment(BOS, is_marker=True, is_reply=False)
    yield _Segment(f" User: {user} ", is_marker=False, is_reply=False)
    yield _Segment(SEP, is_marker=True, is_reply=False)
    yield _Segment(" Bot:", is_marker=False, is_reply=False)
    if bot is not None:
        # the space after "Bot:" belongs to the reply: GPT-2 style BPE attaches it to the word
        yield _Segment(f" {bot} ", is_marker=False, is_reply=True)
        yield _Segment(EOS, is_marker=True, is_reply=True)


def _encode_segment(segment: _Segment, tokenizer: Tokenizer) -> list[int]:
    if segment.is_marker:
        special_id = tokenizer.special_tokens.get(segment.text)
        if special_id is not None:
            return [special_id]
    return tokenizer.encode(segment.text)


# ----------------------------------------------------------------------------------------------
# DailyDialog's pre-tokenised text

_SPACE_BEFORE = re.compile(r" +([,.?!;:%)])")  # "sir ." -> "sir."
_SPACE_AFTER = re.compile(r"([($]) +(?=\S)")  # "( see" -> "(see", "$ 5" -> "$5"
# "Let ' s", "John 's", "o \u2019 clock": the apostrophe, ASCII or U+2019, is kept as written
_APOSTROPHE = re.compile(r"(\w) ?(['\u2019]) ?(s|t|m|d|ll|re|ve|clock)\b")
_NOT = re.compile(r"(\w) n't\b")  # "do n't" -> "don't"
_GLUED_SENTENCE = re.compile(r"([a-z][.?!])([A-Z])")  # "too far.Can you" -> "too far. Can you"
_SPACES = re.compile(r" {2,}")


def detokenize_dailydialog(text: str) -> str:
    """Undo DailyDialog's spaces around punctuation ("Good morning , sir ." -> "Good morning,
    sir."), so a model learns ordinary written English rather than the annotators' tokenisation.

    Only the common, unambiguous cases are fixed, plus the data's sentences run together
    ("far.Can"); double quotes stay spaced because an opening and a closing `"` look the same.
    """
    text = _SPACES.sub(" ", text.strip())
    text = _APOSTROPHE.sub(r"\1\2\3", text)
    text = _NOT.sub(r"\1n't", text)
    text = _SPACE_BEFORE.sub(r"\1", text)
    text = _GLUED_SENTENCE.sub(r"\1 \2", text)
    return _SPACE_AFTER.sub(r"\1", text)
