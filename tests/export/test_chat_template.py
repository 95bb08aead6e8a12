"""The exported chat_template: transformers' apply_chat_template renders a conversation exactly
as tinygpt trains on it and as `tinygpt chat` prompts with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2.exceptions import TemplateError
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tinygpt.data.chat_format import (
    Conversation,
    encode_conversation,
    history_prompt,
    render_text,
)
from tinygpt.export.hf_tokenizer import export_tokenizer
from tinygpt.generate.chat import transcript_prompt
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.tokenizers.char import CharTokenizer

TURNS = (
    ("Hi there! Are you open?", "Hello, we are open until 9."),
    ("Great, see you at 8 then.", "See you."),
)
CONVERSATION = Conversation(TURNS)
NEXT = "Thanks, bye."
MESSAGES = [
    {"role": role, "content": text}
    for user, bot in TURNS
    for role, text in (("user", user), ("assistant", bot))
]
ASKING = [*MESSAGES, {"role": "user", "content": NEXT}]


def hf_tokenizer(tokenizer: Tokenizer, directory: Path) -> PreTrainedTokenizerBase:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in export_tokenizer(tokenizer, model_max_length=512).files.items():
        (directory / name).write_bytes(data)
    return AutoTokenizer.from_pretrained(directory)


def ids_of(hf: PreTrainedTokenizerBase, messages: list[dict], **options) -> list[int]:
    return hf.apply_chat_template(messages, tokenize=True, return_dict=True, **options)["input_ids"]


@pytest.fixture(params=["char", "bpe", "sentencepiece"])
def dialog_tokenizer(request) -> Tokenizer:
    """Tokenizers of dialog runs: the markers are special ids, or characters of the vocabulary."""
    if request.param == "char":
        return CharTokenizer.train(render_text(CONVERSATION) + NEXT)
    return request.getfixturevalue({"bpe": "bpe", "sentencepiece": "spiece"}[request.param])


def test_the_dialog_template_gives_tinygpts_text_and_ids(dialog_tokenizer, tmp_path: Path):
    hf = hf_tokenizer(dialog_tokenizer, tmp_path)
    assert hf.apply_chat_template(MESSAGES, tokenize=False) == render_text(CONVERSATION)
    assert ids_of(hf, MESSAGES) == encode_conversation(CONVERSATION, dialog_tokenizer)[0]
    # the generation prompt ends in ` Bot:`, where `tinygpt chat` lets the model reply
    expected = history_prompt(CONVERSATION, NEXT, dialog_tokenizer)
    assert ids_of(hf, ASKING, add_generation_prompt=True) == expected
    text = hf.apply_chat_template(ASKING, tokenize=False, add_generation_prompt=True)
    assert text.endswith(f"\n<s> User: {NEXT} <sep> Bot:")


def test_a_tokenizer_without_the_markers_gets_chats_transcript(tmp_path: Path):
    """A character vocabulary without `<` cannot write `<s>`: `tinygpt chat` then prompts a
    `User:` / `Bot:` transcript, and so does the template."""
    tokenizer = CharTokenizer.train("User: Bot:\n" + "".join(u + b for u, b in TURNS) + NEXT)
    hf = hf_tokenizer(tokenizer, tmp_path)
    assert ids_of(hf, ASKING, add_generation_prompt=True) == (
        transcript_prompt(TURNS, NEXT, tokenizer)
    )


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "Be nice."}, *MESSAGES],
        [MESSAGES[0], MESSAGES[0]],
        [MESSAGES[1]],
    ],
    ids=["system", "two-users", "assistant-first"],
)
def test_messages_outside_the_format_are_refused(messages, bpe, tmp_path: Path):
    hf = hf_tokenizer(bpe, tmp_path)
    with pytest.raises(TemplateError, match="user and assistant messages in turn"):
        hf.apply_chat_template(messages, tokenize=False)
