"""What a request asks the generation worker for: its prompts as token ids, its reply budget,
its stop strings and its sampling settings, each checked, so a client's mistake is a 400
naming the field (`APIError`) before anything is queued.

A reply may pass the model's context, and a completion prompt may be longer than it: decoding
slides as `tinygpt sample` does (see `tinygpt.generate.decode`), so `max_tokens` is bounded only
by `MAX_TOKENS`.
"""

from __future__ import annotations

from typing import Any

from tinygpt.config import SampleConfig
from tinygpt.generate.chat import Turn
from tinygpt.generate.engine import GenerationSettings
from tinygpt.serve.api_errors import APIError
from tinygpt.serve.schemas import (
    MAX_PROMPT_TOKENS,
    MAX_STOPS,
    ChatCompletionRequest,
    ChatMessage,
    Prompt,
    SamplingFields,
)
from tinygpt.tokenizers.base import Tokenizer


def generation_settings(
    body: SamplingFields,
    sample: SampleConfig,
    max_tokens: int,
    stops: tuple[str, ...],
    logprobs: int | None,
) -> GenerationSettings:
    """The request's sampling fields; those it leaves out are the run's `sample` config, as
    other servers take a model's generation config."""
    min_tokens = body.min_tokens or 0
    if min_tokens > max_tokens:
        raise APIError(
            400, f"min_tokens={min_tokens} is above max_tokens={max_tokens}", "min_tokens"
        )
    return GenerationSettings.from_sample(
        sample,
        max_new_tokens=max_tokens,
        min_new_tokens=min_tokens,
        temperature=_given(body.temperature, sample.temperature),
        top_k=_given(body.top_k, sample.top_k),
        top_p=_given(body.top_p, sample.top_p),
        repetition_penalty=_given(body.repetition_penalty, 1.0),
        presence_penalty=_given(body.presence_penalty, 0.0),
        frequency_penalty=_given(body.frequency_penalty, 0.0),
        stop=stops,
        seed=body.seed,
        logprobs=logprobs,
    )


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def reply_budget(requested: int | None, default: int, echo: bool) -> int:
    """The requested reply budget or the default. The reply may pass the context: it slides
    (see `tinygpt.generate.decode`), as `tinygpt sample` does."""
    if requested is None:
        return default
    if requested == 0 and not echo:
        raise APIError(
            400,
            "max_tokens=0 generates nothing; give 1 or more (or echo: true to score the prompt)",
            "max_tokens",
        )
    return requested


def requested_chat_budget(body: ChatCompletionRequest) -> int | None:
    """max_completion_tokens, OpenAI's newer name, or max_tokens; both only if they agree."""
    given = {body.max_tokens, body.max_completion_tokens} - {None}
    if len(given) > 1:
        raise APIError(
            400,
            f"max_tokens={body.max_tokens} and max_completion_tokens="
            f"{body.max_completion_tokens} disagree; give one of them",
            "max_completion_tokens",
        )
    return given.pop() if given else None


def prompt_list(prompt: Prompt) -> list[Any]:
    """The prompts a completion request holds: a text, a list of texts, token ids (as OpenAI
    takes them: what an evaluation harness that tokenizes for itself sends) or a list of those."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)


def completion_prompts(prompt: Prompt, tokenizer: Tokenizer) -> list[tuple[str, list[int]]]:
    """(text, token ids) of every prompt of `prompt_list`."""
    prompts = prompt_list(prompt)
    if not prompts:
        raise APIError(400, "prompt is an empty list; give at least one prompt", "prompt")
    texts_and_ids = []
    for one in prompts:
        if not one:
            raise APIError(
                400, "prompt is empty; give at least one character (or token) to continue",
                "prompt",
            )  # fmt: skip
        if isinstance(one, str):
            texts_and_ids.append((one, tokenizer.encode(one)))
        else:
            texts_and_ids.append((tokenizer.decode(_checked_ids(one, tokenizer)), list(one)))
    for _, ids in texts_and_ids:
        if len(ids) > MAX_PROMPT_TOKENS:
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens; this server reads at most {MAX_PROMPT_TOKENS}",
                "prompt",
                "context_length_exceeded",
            )
    return texts_and_ids


def _checked_ids(ids: list[int], tokenizer: Tokenizer) -> list[int]:
    outside = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
    if outside:
        raise APIError(
            400,
            f"prompt token id {outside[0]} is outside the vocabulary; give ids from 0 to "
            f"{tokenizer.vocab_size - 1}",
            "prompt",
        )
    return ids


def checked_stops(body: SamplingFields) -> tuple[str, ...]:
    stops = body.stop_strings()
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"stop has {len(stops)} strings; give at most {MAX_STOPS}", "stop")
    if any(not stop for stop in stops):
        raise APIError(400, "stop has an empty string; give non-empty text", "stop")
    return stops


def includes_usage(body: SamplingFields) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def chat_turns(messages: list[ChatMessage]) -> tuple[list[Turn], str]:
    """(user, assistant) turns and the new user message. System messages are left out: the
    dialog format has no place for them. Consecutive messages of one role are joined."""
    spoken: list[tuple[str, str]] = []
    for message in messages:
        if message.role not in ("user", "assistant"):
            continue
        text = " ".join(message.text().split())  # a newline would read as a turn separator
        if spoken and spoken[-1][0] == message.role:
            spoken[-1] = (message.role, f"{spoken[-1][1]} {text}".strip())
        else:
            spoken.append((message.role, text))
    if not spoken or spoken[-1][0] != "user":
        raise APIError(
            400, "the last message must be the user's: the model replies to it", "messages"
        )
    if not spoken[-1][1]:
        raise APIError(400, "the last user message is empty; give some text", "messages")
    turns: list[Turn] = []
    user = ""
    for role, text in spoken[:-1]:
        if role == "user":
            user = text
        else:
            turns.append((user, text))
            user = ""
    return turns, spoken[-1][1]
