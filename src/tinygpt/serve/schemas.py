"""Request bodies of the OpenAI-compatible endpoints, checked by pydantic.

Unknown fields are refused (`extra="forbid"`) rather than ignored: a client that sends
`logit_bias` or `tools` should learn that they do nothing here. Fields may be null, as OpenAI
clients sometimes send them; null means the default. Numbers are bounded here (a seed
torch.Generator cannot take answers 400, not 500), and JSON's NaN and Infinity extensions are
refused; limits that depend on the server (choices per request) are checked in `routes.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from tinygpt.config import SEED_LIMIT

MAX_STOPS = 4  # as OpenAI
MAX_LOGPROBS = 20  # likeliest tokens listed per token (OpenAI: 5 for completions, 20 for chat)
# a reply or a prompt longer than this is a mistake (a reply slides past the context, so the
# context does not bound it); one this long holds a row of the batch for minutes already
MAX_TOKENS = 65_536
MAX_PROMPT_TOKENS = MAX_TOKENS

# a text, texts, token ids or lists of token ids, as OpenAI's /v1/completions takes
Prompt = str | list[str] | list[int] | list[list[int]]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StreamOptions(_Request):
    include_usage: bool | None = None  # a last chunk with `usage` and no choices


class SamplingFields(_Request):
    """Fields shared by both endpoints; top_k, repetition_penalty and min_tokens are tinygpt's."""

    model: str | None = None  # checked against the served model's id when given
    max_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)  # 0: only with echo
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1)  # choices per prompt, decoded as rows of one batch
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)  # OpenAI's range
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stop: str | list[str] | None = Field(None)
    # an integer torch.Generator takes: not a float or a string of digits, as OpenAI
    seed: StrictInt | None = Field(None, ge=0, lt=SEED_LIMIT)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored, as an end-user id is only for logging
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    min_tokens: int | None = Field(None, ge=0)

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(stops)


class CompletionRequest(SamplingFields):
    prompt: Prompt
    echo: bool | None = None  # the prompt before the completion (with logprobs: scored too)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # likeliest tokens per token


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)  # max_tokens' new name
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # needs logprobs: true
