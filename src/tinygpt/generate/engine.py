"""The generation engine: settings, stop conditions and streamed text for one prompt or many.

`stream_text` is what the CLI, the chat and the server call: it yields text pieces as tokens are
produced and, once exhausted, tells why it stopped (`finish_reason`) and how many tokens it used.
`generate_batch` completes several prompts in one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from tinygpt.data.chat_format import EOS
from tinygpt.errors import DataError
from tinygpt.generate.decode import beam_search, sample_tokens
from tinygpt.model.gpt import GPT
from tinygpt.model.linear import PRECISIONS, decoding_dtype
from tinygpt.tokenizers.base import StreamDecoder, Tokenizer

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationSettings:
    """How to continue a prompt. Defaults: sampling at temperature 1 with no filter."""

    max_new_tokens: int = 256  # hard limit on generated tokens
    min_new_tokens: int = 0  # end-of-text and stop strings are ignored before this many
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in prompt or output (CTRL)
    stop: tuple[str, ...] = ()  # text that ends generation; it is not included in the output
    stop_at_end_of_text: bool = True  # end at the tokenizer's end-of-text or `</s>` token
    seed: int | None = None  # same seed, same output
    num_beams: int = 1  # > 1: beam search (deterministic; temperature/top-k/top-p unused)
    length_penalty: float = 1.0  # beam search: score = log p / length ** length_penalty
    # weights read by decoding steps: float16 halves the bytes (faster for a model whose
    # weights do not fit in the CPU's caches) and moves logits by ~1e-2; float32 is exact;
    # auto picks by the model's size (see tinygpt.model.linear)
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0 or self.min_new_tokens < 0:
            raise DataError("max_new_tokens and min_new_tokens must not be negative")
        if self.min_new_tokens > self.max_new_tokens:
            raise DataError(
                f"min_new_tokens={self.min_new_tokens} is above max_new_tokens="
                f"{self.max_new_tokens}"
            )
        if self.temperature < 0:
            raise DataError(f"temperature={self.temperature} must not be negative")
        if self.top_k < 0:
            raise DataError(f"top_k={self.top_k} must not be negative")
        if not 0.0 < self.top_p <= 1.0:
            raise DataError(f"top_p={self.top_p} must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise DataError(f"repetition_penalty={self.repetition_penalty} must be positive")
        if self.num_beams < 1:
            raise DataError(f"num_beams={self.num_beams} must be at least 1")
        if any(not text for text in self.stop):
            raise DataError("a stop string is empty; give non-empty text")
        if self.precision not in PRECISIONS:
            raise DataError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass
class TextStream:
    """Iterate for text pieces; afterwards `finish_reason` and the token counts are set."""

    _pieces: Iterator[str]
    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    _stop_ids: set[int] = field(default_factory=set)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def text(self) -> str:
        """Everything that is left, joined (consumes the stream)."""
        return "".join(self)


def end_of_text_ids(tokenizer: Tokenizer) -> set[int]:
    """Token ids that end a reply: the end-of-text token and the chat format's `</s>`."""
    ids = {tokenizer.eot_id} if tokenizer.eot_id is not None else set()
    if (closing := tokenizer.special_tokens.get(EOS)) is not None:
        ids.add(closing)
    return ids


def encode_prompt(tokenizer: Tokenizer, prompt: str | Sequence[int], block_size: int) -> list[int]:
    if isinstance(prompt, str):
        if not prompt:
            raise DataError("the prompt is empty; give at least one character to continue")
        return tokenizer.encode(prompt)
    if not prompt:
        raise DataError("the prompt has no tokens")
    return list(prompt)


def stream_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str | Sequence[int],
    settings: GenerationSettings,
) -> TextStream:
    """Continue `prompt` (text, or token ids such as a chat history), streaming text pieces.

    Pieces end on whole characters; a stop string is never emitted, not even in part (text that
    could be the start of one is held back until it cannot be)."""
    prompt_ids = encode_prompt(tokenizer, prompt, model.config.block_size)
    stream = TextStream(iter(()), prompt_tokens=len(prompt_ids))
    stream._pieces = _pieces(model, tokenizer, prompt_ids, settings, stream)
    return stream


def _pieces(
    model: GPT,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    settings: GenerationSettings,
    stream: TextStream,
) -> Iterator[str]:
    stop_ids = end_of_text_ids(tokenizer) if settings.stop_at_end_of_text else set()
    if settings.num_beams > 1:
        yield from _beam_pieces(model, tokenizer, prompt_ids, settings, stream, stop_ids)
        return
    decoder = StreamDecoder(tokenizer)
    held = _StopMatcher(settings.stop)
    stream.finish_reason = "length"
    may_stop = True
    for next_ids in _sample(model, tokenizer, [prompt_ids], settings, stop_ids):
        token = int(next_ids[0])
        stream.completion_tokens += 1
        may_stop = stream.completion_tokens > settings.min_new_tokens
        if token in stop_ids:
            stream.finish_reason = "stop"
            break
        piece, stopped = held.push(decoder.push(token), may_stop)
        if piece:
            yield piece
        if stopped:
            stream.finish_reason = "stop"
            return
    piece, stopped = held.push(decoder.flush(), may_stop)
    if stopped:
        stream.finish_reason = "stop"
    yield from filter(None, [piece, "" if stopped else held.release()])


def _beam_pieces(
    model: GPT,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    settings: GenerationSettings,
    stream: TextStream,
    stop_ids: set[int],
) -> Iterator[str]:
    """Beam search finds the whole continuation before any of it is known: one piece."""
    new_ids = beam_search(
        model,
        prompt_ids,
        settings.num_beams,
        settings.max_new_tokens,
        sorted(stop_ids),
        settings.length_penalty,
        settings.min_new_tokens,
        vocab_size=tokenizer.vocab_size,
        precision=decoding_dtype(settings.precision, model),
    )
    stream.completion_tokens = len(new_ids)
    stream.finish_reason = "length" if len(new_ids) == settings.max_new_tokens else "stop"
    text = tokenizer.decode(new_ids)
    held = _StopMatcher(settings.stop)
    piece, stopped = held.push(text, may_stop=True)
    if stopped:
        stream.finish_reason = "stop"
    yield from filter(None, [piece, "" if stopped else held.release()])


def _sample(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: list[list[int]],
    settings: GenerationSettings,
    stop_ids: set[int],
) -> Iterator[Tensor]:
    """The next token of every prompt, step by step, as `settings` asks."""
    return sample_tokens(
        model,
        prompts,
        settings.max_new_tokens,
        settings.temperature,
        settings.top_k,
        settings.top_p,
        settings.repetition_penalty,
        settings.seed,
        suppressed_until=(settings.min_new_tokens, sorted(stop_ids)),
        vocab_size=tokenizer.vocab_size,
        precision=decoding_dtype(settings.precision, model),
    )


class _StopMatcher:
    """Holds back streamed text that might be the beginning of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.pending = ""

    def push(self, piece: str, may_stop: bool) -> tuple[str, bool]:
        """Add text; return (text safe to emit, whether a stop string was reached)."""
        self.pending += piece
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        if may_stop:
            hits = [i for stop in self.stops if (i := self.pending.find(stop)) >= 0]
            if hits:
                out, self.pending = self.pending[: min(hits)], ""
                return out, True
        keep = self._longest_stop_prefix_at_end() if may_stop else 0
        out, self.pending = (
            self.pending[: len(self.pending) - keep],
            self.pending[len(self.pending) - keep :],
        )
        return out, False

    def release(self) -> str:
        out, self.pending = self.pending, ""
        return out

    def _longest_stop_prefix_at_end(self) -> int:
        longest = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:length]):
                    longest = length
                    break
        return longest


def generate_batch(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: Sequence[str | Sequence[int]],
    settings: GenerationSettings,
) -> list[Completion]:
    """Complete every prompt with the same settings, as one left-padded batch (beam search:
    one prompt at a time). Seeded runs repeat exactly for the same list of prompts."""
    encoded = [encode_prompt(tokenizer, prompt, model.config.block_size) for prompt in prompts]
    if settings.num_beams > 1:
        return [_complete_alone(model, tokenizer, ids, settings) for ids in encoded]
    stop_ids = end_of_text_ids(tokenizer) if settings.stop_at_end_of_text else set()
    rows = [
        _Row(StreamDecoder(tokenizer), _StopMatcher(settings.stop), len(ids)) for ids in encoded
    ]
    for next_ids in _sample(model, tokenizer, encoded, settings, stop_ids):
        for row, token in zip(rows, next_ids.tolist(), strict=True):
            row.push(token, stop_ids, settings.min_new_tokens)
        if all(row.finish_reason for row in rows):
            break
    return [row.completion() for row in rows]


@dataclass
class _Row:
    """One sequence of a batch: its text so far and whether it has finished."""

    decoder: StreamDecoder
    held: _StopMatcher
    prompt_tokens: int
    text: str = ""
    tokens: int = 0
    finish_reason: FinishReason | None = None

    def push(self, token: int, stop_ids: set[int], min_new_tokens: int) -> None:
        if self.finish_reason:
            return  # finished rows keep decoding in the batch; their tokens are dropped
        self.tokens += 1
        may_stop = self.tokens > min_new_tokens
        if token in stop_ids:
            self.finish_reason = "stop"
            return
        piece, stopped = self.held.push(self.decoder.push(token), may_stop)
        self.text += piece
        if stopped:
            self.finish_reason = "stop"

    def completion(self) -> Completion:
        if not self.finish_reason:
            piece, stopped = self.held.push(self.decoder.flush(), may_stop=True)
            self.text += piece if stopped else piece + self.held.release()
            self.finish_reason = "stop" if stopped else "length"
        return Completion(self.text, self.finish_reason, self.prompt_tokens, self.tokens)


def _complete_alone(
    model: GPT, tokenizer: Tokenizer, ids: list[int], settings: GenerationSettings
) -> Completion:
    stream = stream_text(model, tokenizer, ids, settings)
    text = stream.text()
    assert stream.finish_reason is not None
    return Completion(text, stream.finish_reason, stream.prompt_tokens, stream.completion_tokens)
