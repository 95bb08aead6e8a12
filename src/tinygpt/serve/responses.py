"""OpenAI's response bodies, built from the worker's events.

Each choice turns its events into fragments (a piece of text, the log-probabilities of its
tokens, a finish reason); a streamed response sends each fragment as a chunk, a whole one joins
them, so the two always agree.

Log-probabilities are the model's own: log_softmax of its logits before any penalty,
temperature, top-k or top-p (as vLLM reports them by default), so that an evaluation harness
scores the model and not the sampler. A token is shown decoded alone; one that ends inside a
character shows U+FFFD there. Every drawn token is listed, so a choice lists
`usage.completion_tokens` of them: an end-of-text token and the tokens of a stop string too,
though the text leaves them out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from tinygpt.generate.chat import ReplyTrimmer
from tinygpt.generate.sampling import TokenLogprob
from tinygpt.serve.worker import Delta, Finished, PromptScores, Ticket
from tinygpt.tokenizers.base import StreamDecoder, Tokenizer

Fragment = dict[str, Any]


class TokenTexts:
    """Token ids as OpenAI shows them: each decoded alone, cached (the vocabulary is finite)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._texts: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        if token_id not in self._texts:
            self._texts[token_id] = self.tokenizer.decode([token_id])
        return self._texts[token_id]


class _TextOffsets:
    """Where each token's text begins in the returned text: the length of the text the tokens
    before it decode to (a token inside a character begins where the character does)."""

    def __init__(self, tokenizer: Tokenizer, start: int = 0) -> None:
        self.decoder = StreamDecoder(tokenizer)
        self.length = start

    def push(self, token_id: int) -> int:
        offset = self.length
        self.length += len(self.decoder.push(token_id))
        return offset


class ChoiceWriter(Protocol):
    def opening(self) -> Fragment | None: ...

    def on(self, event: Delta | PromptScores | Finished) -> Fragment | None: ...

    def join(self, fragments: Sequence[Fragment]) -> Fragment: ...


class CompletionChoice:
    """One choice of /v1/completions: fragments {"text", "logprobs", "finish_reason"}, with
    logprobs in the completions format (tokens, token_logprobs, top_logprobs, text_offset)."""

    def __init__(
        self,
        texts: TokenTexts,
        logprobs: int | None,
        echo: str | None = None,
        prompt_ids: Sequence[int] = (),
    ) -> None:
        self.texts = texts
        self.logprobs = logprobs
        self.echo = echo  # the prompt text, returned before the completion
        self.prompt_ids = list(prompt_ids)
        self.offsets = _TextOffsets(texts.tokenizer, start=len(echo or ""))

    def opening(self) -> Fragment | None:
        """The echoed prompt, unless its log-probabilities are awaited (`PromptScores`)."""
        if self.echo is None or self.logprobs is not None:
            return None
        return self._fragment(self.echo)

    def on(self, event: Delta | PromptScores | Finished) -> Fragment | None:
        if isinstance(event, Finished):
            return self._fragment("", finish_reason=event.finish_reason)
        if isinstance(event, PromptScores):
            return self._fragment(self.echo or "", self._prompt_logprobs(event.tokens))
        if self.logprobs is None:
            return self._fragment(event.text) if event.text else None
        assert event.token is not None, "the settings ask for logprobs"
        offset = self.offsets.push(event.token.token_id)
        return self._fragment(event.text, self._logprobs([event.token], [offset]))

    def join(self, fragments: Sequence[Fragment]) -> Fragment:
        logprobs = None
        if self.logprobs is not None:
            keys = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
            logprobs = {key: [] for key in keys}
            for fragment in fragments:
                for key in keys:
                    logprobs[key] += (fragment["logprobs"] or {}).get(key, [])
        return {
            "text": "".join(fragment["text"] for fragment in fragments),
            "logprobs": logprobs,
            "finish_reason": fragments[-1]["finish_reason"] if fragments else None,
        }

    def _prompt_logprobs(self, scores: list[TokenLogprob]) -> dict[str, list[Any]]:
        """The prompt's tokens; the first has no log-probability (nothing comes before it)."""
        offsets = _TextOffsets(self.texts.tokenizer)
        starts = [offsets.push(token_id) for token_id in self.prompt_ids]
        first = self.texts(self.prompt_ids[0])
        rest = self._logprobs(scores, starts[1:])
        return {
            "tokens": [first, *rest["tokens"]],
            "token_logprobs": [None, *rest["token_logprobs"]],
            "top_logprobs": [None, *rest["top_logprobs"]],
            "text_offset": starts,
        }

    def _logprobs(self, tokens: Sequence[TokenLogprob], offsets: list[int]) -> dict[str, list]:
        # as OpenAI: the likeliest tokens and the chosen one, so up to logprobs + 1 of them
        return {
            "tokens": [self.texts(token.token_id) for token in tokens],
            "token_logprobs": [token.logprob for token in tokens],
            "top_logprobs": [
                {
                    **{self.texts(i): value for i, value in token.top},
                    self.texts(token.token_id): token.logprob,
                }
                for token in tokens
            ],
            "text_offset": offsets,
        }

    @staticmethod
    def _fragment(
        text: str, logprobs: dict[str, list] | None = None, finish_reason: str | None = None
    ) -> Fragment:
        return {"text": text, "logprobs": logprobs, "finish_reason": finish_reason}


class ChatChoice:
    """One choice of /v1/chat/completions: fragments {"delta", "logprobs", "finish_reason"},
    the reply's surrounding spaces trimmed, with logprobs as `{"content": [...]}` entries of
    token, logprob, bytes and top_logprobs."""

    def __init__(self, texts: TokenTexts, top_logprobs: int | None) -> None:
        self.texts = texts
        self.top_logprobs = top_logprobs  # None: no logprobs
        self.trimmer = ReplyTrimmer()

    def opening(self) -> Fragment:
        return self._fragment({"role": "assistant", "content": ""})

    def on(self, event: Delta | PromptScores | Finished) -> Fragment | None:
        if isinstance(event, Finished):
            return self._fragment({}, finish_reason=event.finish_reason)
        assert isinstance(event, Delta), "a chat does not score its prompt"
        text = self.trimmer.push(event.text)
        if event.token is None:
            return self._fragment({"content": text}) if text else None
        return self._fragment({"content": text}, [self._entry(event.token)])

    def join(self, fragments: Sequence[Fragment]) -> Fragment:
        content = "".join(fragment["delta"].get("content", "") for fragment in fragments)
        logprobs = None
        if self.top_logprobs is not None:
            entries = [e for f in fragments for e in (f["logprobs"] or {}).get("content", [])]
            logprobs = {"content": entries, "refusal": None}
        return {
            "message": {"role": "assistant", "content": content},
            "logprobs": logprobs,
            "finish_reason": fragments[-1]["finish_reason"] if fragments else None,
        }

    def _entry(self, token: TokenLogprob) -> dict[str, Any]:
        return {
            **self._described(token.token_id, token.logprob),
            "top_logprobs": [self._described(i, value) for i, value in token.top],
        }

    def _described(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.texts(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    @staticmethod
    def _fragment(
        delta: dict[str, str],
        content: list[dict[str, Any]] | None = None,
        finish_reason: str | None = None,
    ) -> Fragment:
        logprobs = None if content is None else {"content": content, "refusal": None}
        return {"delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}


class Reply:
    """One response, whole or streamed: its head (id, object, created, model), its choices in
    index order, and its usage (prompt tokens counted once per prompt, as OpenAI does)."""

    def __init__(
        self,
        id_prefix: str,
        kind: str,
        chunk_kind: str,
        model_name: str,
        choices: Sequence[ChoiceWriter],
        prompt_tokens: int,
    ) -> None:
        self.head = {
            "id": f"{id_prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": model_name,
        }
        self.chunk_kind = chunk_kind
        self.choices = list(choices)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0

    async def whole(self, ticket: Ticket) -> dict[str, Any]:
        fragments: list[list[Fragment]] = [[] for _ in self.choices]
        async for index, fragment in self._fragments(ticket):
            fragments[index].append(fragment)
        choices = [
            {"index": index, **choice.join(parts)}
            for index, (choice, parts) in enumerate(zip(self.choices, fragments, strict=True))
        ]
        return {**self.head, "choices": choices, "usage": self.usage()}

    async def chunks(self, ticket: Ticket, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        head = {**self.head, "object": self.chunk_kind}
        async for index, fragment in self._fragments(ticket):
            yield {**head, "choices": [{"index": index, **fragment}]}
        if include_usage:
            yield {**head, "choices": [], "usage": self.usage()}

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    async def _fragments(self, ticket: Ticket) -> AsyncIterator[tuple[int, Fragment]]:
        for index, choice in enumerate(self.choices):
            if (fragment := choice.opening()) is not None:
                yield index, fragment
        async for index, event in ticket.stream():
            if isinstance(event, Finished):
                self.completion_tokens += event.completion_tokens
            if (fragment := self.choices[index].on(event)) is not None:
                yield index, fragment
