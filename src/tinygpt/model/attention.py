"""Causal self-attention through PyTorch's fused `scaled_dot_product_attention`: multi-head,
or grouped-query (Ainslie et al. 2023) where several query heads share one key/value head, which
shrinks the KV cache by n_head / n_kv_head."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tinygpt.config import ModelConfig
from tinygpt.model.kv_cache import CacheStep, LayerCache
from tinygpt.model.rope import RotaryEmbedding


# B batch, T time, C n_embd, H query heads, K key/value heads, D head dim
class CausalSelfAttention(nn.Module):
    """Multi-head attention where position t sees positions 0..t only.

    One fused `qkv` projection (a single matmul is faster than three on CPU), then SDPA, which
    dispatches to a flash / memory-efficient kernel and never materialises the T x T mask.
    """

    def __init__(self, config: ModelConfig, feature_widths: tuple[int, ...] = ()) -> None:
        """`feature_widths`: more outputs of the fused input projection after q, k and v, for
        a subclass that needs other per-token features (the hybrid's local queries and keys)."""
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.head_dim = config.head_dim
        self.dropout_p = config.attention_weight_dropout  # on the attention weights, in training
        kv_width = self.n_kv_head * self.head_dim
        self.split_sizes = [config.n_embd, kv_width, kv_width, *feature_widths]
        self.qkv = nn.Linear(config.n_embd, sum(self.split_sizes), bias=config.bias)
        self.qk_norm = config.qk_norm
        self.rope = (
            RotaryEmbedding(self.head_dim, config.block_size, config.rope_theta)
            if config.position == "rope"
            else None
        )
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True  # scaled at init, see GPT._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, cache: LayerCache | None = None, step: CacheStep | None = None
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). With a cache, x holds only the new positions of `step`;
        their keys and values are stored, and they attend over everything cached before them."""
        q, k, v = self.split_heads(self.qkv(x), step)
        if cache is None:
            y = self.attend(q, k, v)  # (B, H, T, D)
        else:
            assert step is not None, "a cached forward needs the cache's step"
            y = self.attend_cached(q, k, v, cache, step)
        return self.merge_heads(y)

    def split_heads(self, qkv: Tensor, step: CacheStep | None) -> tuple[Tensor, Tensor, Tensor]:
        """The fused projection's q, k, v (B, T, C + 2 K D) -> q (B, H, T, D) and k, v
        (B, K, T, D), with the rotary embedding of the tokens' positions applied to q and k."""
        B, T, _ = qkv.shape
        H, K, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = qkv.split(self.split_sizes[:3], dim=2)  # (B, T, C), 2 x (B, T, K*D)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        v = v.view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        if self.qk_norm:
            q, k = qk_norm(q), qk_norm(k)
        if self.rope is not None:
            positions = step.positions if step is not None else None
            q, k = self.rope(q, positions), self.rope(k, positions)
        return q, k, v

    def merge_heads(self, y: Tensor) -> Tensor:
        """Every head's output (B, H, T, D) -> the layer's output (B, T, C)."""
        B, H, T, D = y.shape
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, C)
        return self.resid_dropout(self.proj(y))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Causal softmax attention of q (B, H, T, D) over k, v (B, K, T, D) -> (B, H, T, D),
        with dropout on the weights in training."""
        dropout_p = self.dropout_p if self.training else 0.0
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=k.size(1) != q.size(1)
        )

    def attend_cached(
        self, q: Tensor, k: Tensor, v: Tensor, cache: LayerCache, step: CacheStep
    ) -> Tensor:
        """Inference with a KV cache: q (B, H, T_new, D) over every cached key and value."""
        keys, values = cache.append(k, v, step)  # (B, K, T_all, D)
        return F.scaled_dot_product_attention(
            q, keys, values, attn_mask=step.mask, enable_gqa=keys.size(1) != q.size(1)
        )


def qk_norm(x: Tensor) -> Tensor:
    """RMS-normalise each head's vectors (..., D), with no learned gain (modded-nanogpt; OLMo 2,
    arXiv:2501.00656, learns one): the attention logits q.k / sqrt(D) stay within sqrt(D), so
    they cannot blow up and saturate the softmax, which lets training take a larger learning
    rate. Applied before RoPE, as both do; without a gain the order does not matter, since a
    rotation keeps each vector's length. Statistics in fp32, as RMSNorm's."""
    return F.rms_norm(x.float(), (x.size(-1),), eps=1e-6).to(x.dtype)
