"""Request bodies of the OpenAI-compatible endpoints, checked by pydantic.

Unknown fields are refused (`extra="forbid"`) rather than ignored: a client that sends
`frequency_penalty` or `logprobs` should learn that they do nothing here. Fields may be null, as
OpenAI clients sometimes send them; null means the default. Limits that depend on the model
(max_tokens against block_size) are checked in `app.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOPS = 4  # as OpenAI


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Request):
    include_usage: bool | None = None  # a last chunk with `usage` and no choices


class SamplingFields(_Request):
    """Fields shared by both endpoints; top_k, repetition_penalty and min_tokens are tinygpt's."""

    model: str | None = None  # checked against the served model's id when given
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: Literal[1] | None = None  # one choice per request: the server generates one at a time
    stop: str | list[str] | None = Field(None)
    seed: int | None = None
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
    prompt: str


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
