"""Reading a request's prompts without a server: chat messages to turns, completion prompts to
token ids, and the 400s (`APIError`) for what cannot be read."""

import pytest

from tinygpt.config import SampleConfig
from tinygpt.serve.api_errors import APIError
from tinygpt.serve.prompts import (
    chat_turns,
    checked_stops,
    completion_prompts,
    generation_settings,
    prompt_list,
)
from tinygpt.serve.schemas import ChatMessage, CompletionRequest
from tinygpt.tokenizers.char import CharTokenizer

TOKENIZER = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz ")


def messages(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role=role, content=text) for role, text in pairs]


def test_chat_turns_leave_out_system_messages_and_join_one_speakers_messages():
    turns, message = chat_turns(
        messages(
            ("system", "be brief"),
            ("user", "hi"),
            ("user", "there\nfriend"),
            ("assistant", "hello"),
            ("user", "how are you"),
        )
    )
    assert turns == [("hi there friend", "hello")]
    assert message == "how are you"


@pytest.mark.parametrize(
    "pairs", [(("assistant", "hi"),), (("user", "hi"), ("assistant", "hello")), (("user", " "),)]
)
def test_a_chat_that_does_not_end_with_a_users_words_is_a_400(pairs: tuple[tuple[str, str]]):
    with pytest.raises(APIError) as raised:
        chat_turns(messages(*pairs))
    assert (raised.value.status, raised.value.param) == (400, "messages")


def test_completion_prompts_take_texts_and_token_ids_alike():
    ids = TOKENIZER.encode("ab")
    assert prompt_list("ab") == ["ab"] and prompt_list(ids) == [ids]
    assert completion_prompts(["ab", ids], TOKENIZER) == [("ab", ids), ("ab", ids)]
    with pytest.raises(APIError, match="outside the vocabulary"):
        completion_prompts([[TOKENIZER.vocab_size]], TOKENIZER)


def test_sampling_fields_left_out_are_the_runs_sample_config():
    body = CompletionRequest(prompt="ab", top_p=0.5, stop=["x"])
    sample = SampleConfig()
    settings = generation_settings(body, sample, 7, checked_stops(body), None)
    assert (settings.max_new_tokens, settings.top_p, settings.stop) == (7, 0.5, ("x",))
    assert (settings.temperature, settings.top_k) == (sample.temperature, sample.top_k)
    with pytest.raises(APIError, match="min_tokens=9 is above max_tokens=7"):
        generation_settings(CompletionRequest(prompt="ab", min_tokens=9), sample, 7, (), None)
