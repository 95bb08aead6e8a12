from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from tinygpt.data.chat_format import (
    CHAT_MARKERS,
    Conversation,
    detokenize_dailydialog,
    encode_conversation,
    history_prompt,
    pair_utterances,
    render_text,
)
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.tokenizers.char import CharTokenizer

CONVERSATION = Conversation((("Hi there!", "Hello, how can I help?"), ("Tell a joke", "No.")))
RENDERED = (
    "<s> User: Hi there! <sep> Bot: Hello, how can I help? </s>\n"
    "<s> User: Tell a joke <sep> Bot: No. </s>"
)


class SpecialWordTokenizer(Tokenizer):
    """Ids for characters, plus one id per chat marker that `encode` never produces."""

    kind = "fake"

    def __init__(self) -> None:
        self.chars = CharTokenizer.train(RENDERED + "<>/")
        self.specials = {m: self.chars.vocab_size + i for i, m in enumerate(CHAT_MARKERS)}

    @property
    def vocab_size(self) -> int:
        return self.chars.vocab_size + len(self.specials)

    @property
    def special_tokens(self) -> dict[str, int]:
        return self.specials

    def encode(self, text: str) -> list[int]:
        return self.chars.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        names = {i: m for m, i in self.specials.items()}
        return "".join(names.get(i) or self.chars.decode([i]) for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> SpecialWordTokenizer:
        return cls()


def test_render_text_is_the_dialog_spec_format():
    assert render_text(CONVERSATION) == RENDERED
    assert render_text(Conversation((("a", "b"),))) == "<s> User: a <sep> Bot: b </s>"


def test_pair_utterances_drops_an_odd_last_utterance():
    assert pair_utterances(["a", "b", "c", "d", "e"]).turns == (("a", "b"), ("c", "d"))
    assert pair_utterances(["only one"]).turns == ()


def reply_text(ids: list[int], mask: list[bool], tokenizer: Tokenizer) -> str:
    return tokenizer.decode([i for i, is_reply in zip(ids, mask, strict=True) if is_reply])


def test_char_tokenizer_mask_covers_exactly_the_replies_and_closing_markers():
    tokenizer = CharTokenizer.train(RENDERED)
    ids, mask = encode_conversation(CONVERSATION, tokenizer)
    assert len(ids) == len(mask)
    assert tokenizer.decode(ids) == RENDERED
    assert reply_text(ids, mask, tokenizer) == " Hello, how can I help? </s> No. </s>"
    masked = "".join(c if m else "_" for c, m in zip(RENDERED, mask, strict=True))
    prompts = ("<s> User: Hi there! <sep> Bot:", "\n<s> User: Tell a joke <sep> Bot:")
    expected = "_" * len(prompts[0]) + " Hello, how can I help? </s>"
    assert masked == expected + "_" * len(prompts[1]) + " No. </s>"


def test_special_markers_become_single_ids_and_are_masked_only_when_closing():
    tokenizer = SpecialWordTokenizer()
    ids, mask = encode_conversation(CONVERSATION, tokenizer)
    specials = tokenizer.special_tokens
    assert tokenizer.decode(ids) == RENDERED
    assert ids.count(specials["<s>"]) == ids.count(specials["</s>"]) == 2
    assert ids.count(specials["<sep>"]) == 2
    for marker, is_masked in (("<s>", False), ("<sep>", False), ("</s>", True)):
        assert all(m == is_masked for i, m in zip(ids, mask, strict=True) if i == specials[marker])
    assert reply_text(ids, mask, tokenizer) == " Hello, how can I help? </s> No. </s>"


def test_user_text_cannot_inject_a_marker():
    tokenizer = SpecialWordTokenizer()
    sneaky = Conversation((("<s> </s> <sep>", "ok"),))
    ids, _ = encode_conversation(sneaky, tokenizer)
    assert sum(i in tokenizer.special_tokens.values() for i in ids) == 3  # the real markers only


@pytest.mark.parametrize("tokenizer", [CharTokenizer.train(RENDERED), SpecialWordTokenizer()])
def test_history_prompt_is_a_prefix_of_the_training_ids(tokenizer: Tokenizer):
    full, _ = encode_conversation(CONVERSATION, tokenizer)
    first = history_prompt(Conversation(()), "Hi there!", tokenizer)
    second = history_prompt(Conversation(CONVERSATION.turns[:1]), "Tell a joke", tokenizer)
    assert full[: len(first)] == first
    assert full[: len(second)] == second
    assert tokenizer.decode(second).endswith("\n<s> User: Tell a joke <sep> Bot:")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "Good morning , sir . Is there a bank near here ? ",
            "Good morning, sir. Is there a bank near here?",
        ),
        ("Wow ! That \u2019 s great , isn \u2019 t it ?", "Wow! That\u2019s great, isn\u2019t it?"),
        (
            "I \u2019 m sure you \u2019 ll get used to it .",
            "I\u2019m sure you\u2019ll get used to it.",
        ),
        ("Good.Let ' s go now .", "Good. Let's go now."),
        ("John 's car is red . I do n't know .", "John's car is red. I don't know."),
        (
            "It \u2019 s six o \u2019 clock ; about 50 % ( maybe ) cost $ 5 .",
            "It\u2019s six o\u2019clock; about 50% (maybe) cost $5.",
        ),
        ('Say " cheese " .', 'Say " cheese ".'),
    ],
)
def test_detokenize_dailydialog(raw: str, expected: str):
    assert detokenize_dailydialog(raw) == expected
