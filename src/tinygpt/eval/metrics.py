"""The numbers tinygpt reports about a language model, each defined once.

Plain functions of tensors and floats, importing nothing from tinygpt, so every layer (the
trainer's written-out attention, evaluation, comparison) can use them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MAX_LOSS_FOR_PERPLEXITY = 50.0  # exp(50) ~ 5e21 already means "no model"; exp(710) overflows


def perplexity(loss_nats: float) -> float:
    """exp(mean cross-entropy in nats per token): the number of equally likely tokens the model
    is choosing between. Clamped, so a diverged run reports a huge number, not an overflow."""
    return math.exp(min(loss_nats, MAX_LOSS_FOR_PERPLEXITY))


def bits_per_unit(loss_nats: float, tokens: int, units: int | None) -> float | None:
    """Nats per token to bits per character (or byte): the split's information spread over its
    characters instead of its tokens, so that tokenizers compare. None without a count."""
    return loss_nats * tokens / units / math.log(2) if units else None


# B batch, H query heads, K key/value heads (K divides H), T time, D head dim
def causal_attention_weights(q: Tensor, k: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(D)) with position t seeing 0..t: q (B, H, T, D), k (B, K, T, D) ->
    (B, H, T, T) in q's dtype. Key/value head j serves query heads jG..(j+1)G-1 (G = H / K),
    as in SDPA's `enable_gqa`. Pass fp32 q and k for fp32 weights."""
    H, K, T, D = q.size(1), k.size(1), q.size(2), q.size(3)
    if K != H:
        k = k.repeat_interleave(H // K, dim=1)  # (B, H, T, D)
    scores = (q * (1.0 / math.sqrt(D))) @ k.transpose(-2, -1)  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)  # (T, T)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)
