"""Turning next-token logits into a choice: temperature, top-k, top-p (nucleus), greedy; the
penalties that adjust logits first; and the log-probabilities a client may ask for."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Set every logit outside the top-k and outside the smallest set whose probability reaches
    top_p to -inf. logits (B, V); the most likely token always survives."""
    if top_k and top_k < logits.size(-1):
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already reach top_p (Holtzman et al. 2020)
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def without_ids(logits: Tensor, ids: Iterable[int]) -> Tensor:
    """A copy of logits (B, V) where `ids` cannot be drawn (end-of-text before min_new_tokens)."""
    logits = logits.clone()
    logits[:, sorted(ids)] = float("-inf")
    return logits


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty (Keskar et al. 2019): the logit of every token already in the text is
    divided by `penalty` when positive and multiplied by it when negative, so > 1 makes
    repeats less likely. logits (B, V); seen (B, L) token ids, -1 where nothing is."""
    counts = torch.zeros_like(logits, dtype=torch.int32)
    counts.scatter_add_(1, seen.clamp(min=0), (seen >= 0).to(torch.int32))
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(counts > 0, penalised, logits)


def apply_presence_and_frequency_penalties(
    logits: Tensor, counts: Tensor, presence: float, frequency: float
) -> Tensor:
    """OpenAI's penalties: logits - presence * (count > 0) - frequency * count, where count
    (B, V) is how often each token was generated so far; positive values discourage repeats,
    the frequency penalty more so the more often a token came."""
    counts = counts.to(logits.dtype)
    return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """logits (B, V) -> token ids (B, 1). temperature 0 means greedy (argmax).

    With top-k, the draw is made among the k candidates only (their logits, sorted, then the
    nucleus filter): the same distribution as masking the whole vocabulary, without a pass of
    softmax and random numbers over 50k entries per token. `generator` may be one per row, so
    that each row's draw depends on its own seed only, whatever else shares the batch."""
    logits = logits.float()
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    if top_k and top_k < logits.size(-1):
        candidates, ids = torch.topk(logits / temperature, top_k, dim=-1)  # (B, k), sorted
        probs = filter_logits(candidates, 0, top_p).softmax(dim=-1)
        return ids.gather(-1, draw(probs, generator))
    probs = filter_logits(logits / temperature, 0, top_p).softmax(dim=-1)
    return draw(probs, generator)


def draw(
    probs: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None = None
) -> Tensor:
    """One index per row of probs (B, n), by inverse-CDF sampling: row b takes the first index
    whose cumulative probability exceeds u_b times the row's total, u_b uniform in [0, 1) from
    `generator` (or from generator[b]). A zero-probability index is never taken: it cannot be
    the first to exceed anything its predecessor did not."""
    rows = probs.size(0)
    if isinstance(generator, Sequence):
        if len(generator) != rows:
            raise ValueError(f"{len(generator)} generators for {rows} rows")
        uniform = torch.cat([torch.rand(1, generator=g) for g in generator])
    else:
        uniform = torch.rand(rows, generator=generator)
    cumulative = probs.cumsum(dim=-1)  # (B, n)
    target = uniform.to(probs.device).view(-1, 1) * cumulative[:, -1:]
    return (cumulative <= target).sum(dim=-1, keepdim=True)  # (B, 1)


@dataclass(frozen=True)
class TokenLogprob:
    """A token, its log-probability under the model, and the most likely tokens at its place."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (id, log-probability), most likely first


def token_logprobs(logits: Tensor, chosen: Tensor, top: int = 0) -> list[TokenLogprob]:
    """Each row's chosen token (N,) with its log-probability under logits (N, V), and the `top`
    most likely tokens. The model's own distribution (log_softmax of the logits as given, in
    float32): what an evaluation harness scores, whatever temperature or filter drew the token.
    Tokens that cannot be drawn (-inf: padded vocabulary) are never listed among the top."""
    log_probs = logits.float().log_softmax(dim=-1)  # (N, V)
    chosen_log_probs = log_probs.gather(-1, chosen.view(-1, 1).to(log_probs.device)).view(-1)
    tops: list[tuple[tuple[int, float], ...]] = [()] * log_probs.size(0)
    if top:
        values, ids = log_probs.topk(min(top, log_probs.size(-1)), dim=-1)  # (N, top)
        tops = [
            tuple((i, v) for i, v in zip(row_ids, row_values, strict=True) if v != float("-inf"))
            for row_ids, row_values in zip(ids.tolist(), values.tolist(), strict=True)
        ]
    return [
        TokenLogprob(token, log_prob, row_top)
        for token, log_prob, row_top in zip(
            chosen.view(-1).tolist(), chosen_log_probs.tolist(), tops, strict=True
        )
    ]
