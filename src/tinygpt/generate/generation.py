"""One prompt's continuation: its settings and random stream, the tokens drawn so far, and the
text they release, held back where it might begin a stop string, up to the reason it finished.

`BatchedGeneration` (tinygpt.generate.engine) decodes many of these as one batch and hands each
its row's logits and drawn token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from tinygpt.data.chat_format import EOS
from tinygpt.errors import DataError
from tinygpt.generate.sampling import (
    TokenLogprob,
    apply_presence_and_frequency_penalties,
    apply_repetition_penalty,
    without_ids,
)
from tinygpt.tokenizers.base import StreamDecoder, Tokenizer

if TYPE_CHECKING:  # a type only: the engine imports this module
    from tinygpt.generate.engine import GenerationSettings

FinishReason = Literal["stop", "length"]


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


def end_of_text_ids(tokenizer: Tokenizer) -> set[int]:
    """Token ids that end a reply: the end-of-text token and the chat format's `</s>`."""
    ids = {tokenizer.eot_id} if tokenizer.eot_id is not None else set()
    if (closing := tokenizer.special_tokens.get(EOS)) is not None:
        ids.add(closing)
    return ids


class StopMatcher:
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


class Generation:
    """One prompt's continuation in progress: its settings and random stream, the tokens drawn
    so far, and the text released so far (text that may begin a stop string is held back)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_ids: Sequence[int],
        settings: GenerationSettings,
        seed_offset: int = 0,
    ) -> None:
        if not prompt_ids:
            raise DataError("the prompt has no tokens")
        self.prompt_ids = list(prompt_ids)
        self.settings = settings
        self.stop_ids = end_of_text_ids(tokenizer) if settings.stop_at_end_of_text else set()
        self.generated: list[int] = []
        self.token_logprobs: list[TokenLogprob] = []  # one per generated token, if asked
        # (1, V) times each id was generated, for OpenAI's penalties: kept up to date by `push`
        # once made, instead of counted again over the whole reply at every step
        self._generated_counts: Tensor | None = None
        self.text = ""  # released so far
        self.finish_reason: FinishReason | None = None
        self._decoder = StreamDecoder(tokenizer)
        self._held = StopMatcher(settings.stop)
        self.generator = torch.Generator()
        if settings.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(settings.seed + seed_offset)  # below 2**64: SEED_LIMIT
        if settings.max_new_tokens == 0:
            self.finish_reason = "length"

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def sampling(self) -> tuple[float, int, float]:
        """(temperature, top_k, top_p): rows that share these are sampled as one group."""
        return self.settings.temperature, self.settings.top_k, self.settings.top_p

    @property
    def adjusts_logits(self) -> bool:
        return self._penalises or self._forbids_end

    @property
    def _penalises(self) -> bool:
        settings = self.settings
        return (
            settings.repetition_penalty != 1.0
            or settings.presence_penalty != 0.0
            or settings.frequency_penalty != 0.0
        )

    @property
    def _forbids_end(self) -> bool:
        return len(self.generated) < self.settings.min_new_tokens and bool(self.stop_ids)

    def adjust(self, logits: Tensor, seen: Tensor) -> Tensor:
        """This row's logits (1, V) with its penalties applied, and end-of-text forbidden before
        min_new_tokens; `seen` (1, L) holds the context's ids, -1 for padding. The repetition
        penalty looks at the whole context, OpenAI's penalties at the generated tokens only."""
        settings = self.settings
        if settings.repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
        if settings.presence_penalty or settings.frequency_penalty:
            if self._generated_counts is None:
                generated = torch.tensor(self.generated, dtype=torch.long, device=logits.device)
                self._generated_counts = torch.bincount(generated, minlength=logits.size(-1))
            logits = apply_presence_and_frequency_penalties(
                logits,
                self._generated_counts.view(1, -1),
                settings.presence_penalty,
                settings.frequency_penalty,
            )
        return without_ids(logits, self.stop_ids) if self._forbids_end else logits

    def push(self, token: int) -> str:
        """Take the drawn token; return the text it releases (often "") and finish at an
        end-of-text id, a stop string, or max_new_tokens."""
        self.generated.append(token)
        if self._generated_counts is not None:
            self._generated_counts[token] += 1
        may_stop = len(self.generated) > self.settings.min_new_tokens
        if token in self.stop_ids:
            self.finish_reason = "stop"
            return self._release(self._finish(may_stop))
        piece, stopped = self._held.push(self._decoder.push(token), may_stop)
        if stopped:
            self.finish_reason = "stop"
        elif len(self.generated) >= self.settings.max_new_tokens:
            piece += self._finish(may_stop)
        return self._release(piece)

    def completion(self) -> Completion:
        assert self.finish_reason is not None, "the generation has not finished"
        return Completion(self.text, self.finish_reason, len(self.prompt_ids), len(self.generated))

    def _finish(self, may_stop: bool) -> str:
        """The text still held back or undecoded, at the end."""
        piece, stopped = self._held.push(self._decoder.flush(), may_stop)
        if stopped:
            self.finish_reason = "stop"
            return piece
        self.finish_reason = self.finish_reason or "length"
        return piece + self._held.release()

    def _release(self, piece: str) -> str:
        self.text += piece
        return piece
