"""Causal self-attention through PyTorch's fused `scaled_dot_product_attention`: multi-head,
or grouped-query (Ainslie et al. 2023) where several query heads share one key/value head, which
shrinks the KV cache by n_head / n_kv_head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinygpt.config import ModelConfig
from tinygpt.model.dropout import Dropout, dropout
from tinygpt.model.kv_cache import LayerCache
from tinygpt.model.linear import Linear
from tinygpt.model.rope import RotaryEmbedding


# B batch, T time, C n_embd, H query heads, K key/value heads, D head dim
class CausalSelfAttention(nn.Module):
    """Multi-head attention where position t sees positions 0..t only.

    One fused `qkv` projection (a single matmul is faster than three on CPU), then SDPA, which
    dispatches to a flash / memory-efficient kernel and never materialises the T x T mask.
    """

    def __init__(self, config: ModelConfig, extra_width: tuple[int, ...] = ()) -> None:
        """`extra_width`: more outputs of the fused input projection, for subclasses that need
        other per-token features (the hybrid's local scorer); handed to `attend`."""
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        kv_width = self.n_kv_head * self.head_dim
        self.split_sizes = [config.n_embd, kv_width, kv_width, *extra_width]
        self.qkv = Linear(config.n_embd, sum(self.split_sizes), bias=config.bias)
        self.rope = (
            RotaryEmbedding(self.head_dim, config.block_size, config.rope_theta)
            if config.position == "rope"
            else None
        )
        self.proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True  # scaled at init, see GPT._init_weights
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, cache: LayerCache | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C). With a cache, x holds only the new positions; their keys
        and values are stored, and they attend over everything cached before them."""
        B, T, C = x.shape
        H, K, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v, *extra = self.qkv(x).split(self.split_sizes, dim=2)  # (B, T, C), 2 x (B, T, K*D)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        v = v.view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        if self.rope is not None:
            positions = cache.step.positions if cache is not None else None
            q, k = self.rope(q, positions), self.rope(k, positions)
        if cache is None:
            y = self.attend(q, k, v, extra)  # (B, H, T, D)
        else:
            y = self.attend_cached(q, k, v, extra, cache)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, extra: list[Tensor]) -> Tensor:
        """Causal softmax attention of q (B, H, T, D) over k, v (B, K, T, D) -> (B, H, T, D)."""
        if self.training and self.dropout > 0 and q.device.type == "cpu":
            return causal_attention_with_dropout(q, k, v, self.dropout)
        dropout_p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=k.size(1) != q.size(1)
        )

    def attend_cached(
        self, q: Tensor, k: Tensor, v: Tensor, extra: list[Tensor], cache: LayerCache
    ) -> Tensor:
        """Inference with a KV cache: q (B, H, T_new, D) over every cached key and value."""
        keys, values = cache.append(k, v)  # (B, K, T_all, D)
        return F.scaled_dot_product_attention(
            q, keys, values, attn_mask=cache.step.mask, enable_gqa=keys.size(1) != q.size(1)
        )


def causal_attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, p: float) -> Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) with dropout, then times v; q (B, H, T, D),
    k and v (B, K, T, D) with K dividing H.

    SDPA's fused CPU kernels refuse dropout, and its fallback draws the dropout mask one
    Bernoulli sample at a time; written out, the mask comes from `tinygpt.model.dropout`.
    Tested equal to SDPA when p = 0.
    """
    H, K, T, D = q.size(1), k.size(1), q.size(-2), q.size(-1)
    if K != H:  # each key/value head serves H / K consecutive query heads, as in SDPA
        k, v = k.repeat_interleave(H // K, dim=1), v.repeat_interleave(H // K, dim=1)
    scores = (q * (1.0 / math.sqrt(D))) @ k.transpose(-2, -1)  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)  # (T, T)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)  # (B, H, T, T)
    return dropout(weights, p, training=True).to(v.dtype) @ v  # (B, H, T, D)
