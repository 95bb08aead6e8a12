"""The generation engine: settings and streamed text for one prompt or many.

`stream_text` is what the CLI and the chat call: it yields text pieces as tokens are produced
and, once exhausted, tells why it stopped (`finish_reason`) and how many tokens it used.
`generate_batch` completes several prompts in one batch.

Both run on `BatchedGeneration`, which the server uses directly: a batch of `Generation`s (one
prompt each, each with its own settings, random stream and stop conditions:
tinygpt.generate.generation) that advances every one of them by
a token per step. A generation leaves the batch when it finishes, and a new one may join
between steps: its prompt is encoded alone into the shared KV cache (the batch re-encodes
only when the prompt is longer than what the batch has cached). So requests that arrive while
others are being answered share the model's steps instead of waiting for them to end.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tinygpt.config import SampleConfig, check_seed
from tinygpt.errors import ConfigError, DataError
from tinygpt.generate.decode import BatchDecoder, beam_search, first_context, without_padding_ids
from tinygpt.generate.fast_weights import PRECISIONS, decoding_dtype
from tinygpt.generate.generation import (
    Completion,
    FinishReason,
    Generation,
    StopMatcher,
    end_of_text_ids,
)
from tinygpt.generate.sampling import sample_next_token, token_logprobs
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.base import Tokenizer


@dataclass(frozen=True)
class GenerationSettings:
    """How to continue a prompt. Defaults: sampling at temperature 1 with no filter."""

    max_new_tokens: int = 256  # hard limit on generated tokens
    min_new_tokens: int = 0  # end-of-text and stop strings are ignored before this many
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in prompt or output (CTRL)
    presence_penalty: float = 0.0  # OpenAI's: subtracted from a token's logit once it was generated
    frequency_penalty: float = 0.0  # OpenAI's: subtracted once per time a token was generated
    stop: tuple[str, ...] = ()  # text that ends generation; it is not included in the output
    stop_at_end_of_text: bool = True  # end at the tokenizer's end-of-text or `</s>` token
    seed: int | None = None  # same seed, same output
    num_beams: int = 1  # > 1: beam search (deterministic; temperature/top-k/top-p unused)
    length_penalty: float = 1.0  # beam search: score = log p / length ** length_penalty
    # record each drawn token's log-probability under the model and this many likeliest tokens
    # (`Generation.token_logprobs`); None: record nothing
    logprobs: int | None = None
    # weights read by decoding steps: float16 halves the bytes (faster for a model whose
    # weights do not fit in the CPU's caches) and moves logits by ~1e-2; float32 is exact;
    # auto picks by the model's size (see tinygpt.generate.fast_weights)
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0 or self.min_new_tokens < 0:
            raise ConfigError("max_new_tokens and min_new_tokens must not be negative")
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError(
                f"min_new_tokens={self.min_new_tokens} is above max_new_tokens="
                f"{self.max_new_tokens}"
            )
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature} must not be negative")
        if self.top_k < 0:
            raise ConfigError(f"top_k={self.top_k} must not be negative")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty={self.repetition_penalty} must be positive")
        for name in ("presence_penalty", "frequency_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)} must be a finite number")
        if self.seed is not None:
            check_seed(self.seed, f"seed={self.seed}")
        if self.logprobs is not None and self.logprobs < 0:
            raise ConfigError(f"logprobs={self.logprobs} must not be negative")
        if self.num_beams < 1:
            raise ConfigError(f"num_beams={self.num_beams} must be at least 1")
        if any(not text for text in self.stop):
            raise ConfigError("a stop string is empty; give non-empty text")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")

    @classmethod
    def from_sample(cls, sample: SampleConfig, **changes: object) -> GenerationSettings:
        """A run's `sample` config as settings (its length, temperature, filters, seed and
        precision), with `changes` over them: the one place the two are matched up."""
        settings = cls(
            max_new_tokens=sample.max_new_tokens,
            temperature=sample.temperature,
            top_k=sample.top_k,
            top_p=sample.top_p,
            seed=sample.sample_seed,
            precision=sample.precision,
        )
        return dataclasses.replace(settings, **changes)


@dataclass
class TextStream:
    """Iterate for text pieces; afterwards `finish_reason` and the token counts are set."""

    _pieces: Iterator[str]
    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def text(self) -> str:
        """Everything that is left, joined (consumes the stream)."""
        return "".join(self)


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
    if settings.num_beams > 1:
        stop_ids = end_of_text_ids(tokenizer) if settings.stop_at_end_of_text else set()
        yield from _beam_pieces(model, tokenizer, prompt_ids, settings, stream, stop_ids)
        return
    generation = Generation(tokenizer, prompt_ids, settings)
    batch = BatchedGeneration(model, tokenizer, settings.precision)
    batch.add(generation)
    while batch.rows:
        for _, piece in batch.step():
            stream.completion_tokens = len(generation.generated)
            if piece:
                yield piece
    stream.finish_reason = generation.finish_reason


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
    held = StopMatcher(settings.stop)
    piece, stopped = held.push(text, may_stop=True)
    if stopped:
        stream.finish_reason = "stop"
    yield from filter(None, [piece, "" if stopped else held.release()])


def generate_batch(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: Sequence[str | Sequence[int]],
    settings: GenerationSettings,
) -> list[Completion]:
    """Complete every prompt with the same settings, as one batch (beam search: one prompt at a
    time). With a seed, prompt i draws from seed + i, so equal prompts get different samples
    and a seeded call repeats exactly."""
    encoded = [encode_prompt(tokenizer, prompt, model.config.block_size) for prompt in prompts]
    if settings.num_beams > 1:
        return [_complete_alone(model, tokenizer, ids, settings) for ids in encoded]
    generations = [
        Generation(tokenizer, ids, settings, seed_offset=index) for index, ids in enumerate(encoded)
    ]
    batch = BatchedGeneration(model, tokenizer, settings.precision)
    for generation in generations:
        batch.add(generation)
    while batch.rows:
        batch.step()
    return [generation.completion() for generation in generations]


class BatchedGeneration:
    """Generations decoded as one left-padded batch, one token for each per step.

    All rows read weights in one precision (the first row's settings decide; `accepts` tells
    whether another generation can join). Rows leave when they finish (`step`) or are dropped.
    A joining row's prompt is encoded alone into the shared cache (`BatchDecoder.join`); only a
    prompt longer than the batch's context so far makes the whole batch re-encode."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, precision: str) -> None:
        self.model = model
        self.vocab_size = tokenizer.vocab_size
        self.precision = precision
        self.rows: list[Generation] = []
        self._decoder: BatchDecoder | None = None  # None: (re)build at the next step

    def accepts(self, generation: Generation) -> bool:
        return generation.settings.precision == self.precision

    def add(self, generation: Generation) -> None:
        """Join the batch (a generation of zero tokens is finished already and does not)."""
        if not self.accepts(generation):
            raise ValueError("a batch decodes in one precision")
        if not generation.finished:
            self.rows.append(generation)
            context = first_context(generation.prompt_ids, self.model.config.block_size)
            if self._decoder is not None and not self._decoder.join(context):
                self._decoder = None  # re-encode every row at the next step

    def drop(self, generation: Generation) -> None:
        """Leave the batch unfinished (its client went away)."""
        self._keep([row for row in self.rows if row is not generation])

    @torch.inference_mode()
    def step(self) -> list[tuple[Generation, str]]:
        """A token for every row; returns (generation, text it released) for each. Finished
        generations leave the batch."""
        decoder = self._decoder or self._encode()
        logits = without_padding_ids(decoder.next_logits(), self.vocab_size)  # (B, V)
        tokens = self._sample(logits, decoder)
        self._record_logprobs(logits, tokens)
        decoder.push(tokens)
        events = [
            (row, row.push(token)) for row, token in zip(self.rows, tokens.tolist(), strict=True)
        ]
        if any(row.finished for row in self.rows):
            self._keep([row for row in self.rows if not row.finished])
        return events

    def _sample(self, logits: Tensor, decoder: BatchDecoder) -> Tensor:
        """The next token of every row (B,): each row's own adjustments, then one draw per
        group of rows with the same sampling settings, each row from its own generator."""
        adjusting = [i for i, row in enumerate(self.rows) if row.adjusts_logits]
        if adjusting:
            logits, seen = logits.clone(), decoder.seen_tokens()
            for i in adjusting:
                logits[i : i + 1] = self.rows[i].adjust(logits[i : i + 1], seen[i : i + 1])
        groups: dict[tuple[float, int, float], list[int]] = {}
        for i, row in enumerate(self.rows):
            groups.setdefault(row.sampling, []).append(i)
        generators = [row.generator for row in self.rows]
        if len(groups) == 1:  # the usual case: no copy of the logits
            return sample_next_token(logits, *self.rows[0].sampling, generators).view(-1)
        tokens = torch.empty(len(self.rows), dtype=torch.long, device=logits.device)
        for sampling, rows in groups.items():
            index = torch.tensor(rows, device=logits.device)
            chosen = sample_next_token(logits[index], *sampling, [generators[i] for i in rows])
            tokens[index] = chosen.view(-1)
        return tokens

    def _record_logprobs(self, logits: Tensor, tokens: Tensor) -> None:
        """Log-probabilities of the drawn tokens under the model's logits (B, V), before any
        penalty, temperature or filter, for the rows that ask for them."""
        asking = [i for i, row in enumerate(self.rows) if row.settings.logprobs is not None]
        if not asking:
            return
        top = max(self.rows[i].settings.logprobs or 0 for i in asking)
        index = torch.tensor(asking, device=logits.device)
        for i, record in zip(
            asking, token_logprobs(logits[index], tokens[index], top), strict=True
        ):
            row = self.rows[i]
            row.token_logprobs.append(
                dataclasses.replace(record, top=record.top[: row.settings.logprobs])
            )

    def _encode(self) -> BatchDecoder:
        block_size = self.model.config.block_size
        # a context longer than the block starts as it would alone, not making the others slide
        contexts = [first_context(row.prompt_ids + row.generated, block_size) for row in self.rows]
        dtype = decoding_dtype(self.precision, self.model)
        self._decoder = BatchDecoder(self.model, contexts, precision=dtype)
        return self._decoder

    def _keep(self, rows: list[Generation]) -> None:
        if self._decoder is not None and rows:
            kept = [self.rows.index(row) for row in rows]
            self._decoder.reorder(torch.tensor(kept))
        self.rows = rows
        if not rows:
            self._decoder = None


def _complete_alone(
    model: GPT, tokenizer: Tokenizer, ids: list[int], settings: GenerationSettings
) -> Completion:
    stream = stream_text(model, tokenizer, ids, settings)
    text = stream.text()
    assert stream.finish_reason is not None
    return Completion(text, stream.finish_reason, stream.prompt_tokens, stream.completion_tokens)
