"""Hybrid attention (the hybrid-attention spec, docs/specs.md): global grouped-query softmax
attention plus a local additive (Bahdanau-style) branch over the last `local_window` tokens,
mixed by a learned per-head gate.

For head h at position t:

    global_h(t) = causal softmax attention over positions 0..t (GQA, RoPE as configured)
    local_h(t)  = sum over s in t-W+1..t of a(t, s) v_s,
                  a(t, ·) = softmax_s( w_h^T tanh(q'_t + k'_s) )      (Bahdanau et al. 2015)
    y_h(t)      = g_h global_h(t) + (1 - g_h) local_h(t),   g_h = sigmoid(learned scalar)

q' = W_q x and k' = W_k x are `local_dim`-wide features from the same fused input projection as
q, k, v; the local branch reuses the global branch's values (so GQA's value sharing holds too).

Cost, per token and layer, with W = local_window, A = local_dim, H heads of width D, G query
heads per key/value head:
- scores: H·W·A additions, tanh and multiply-adds, computed on the band only (an unfolded
  view of the keys, never a T x T x A tensor); backward keeps the B·H·T·W·A tanh values, so
  activation memory grows with W·A per head, not with the context length.
- weighted sum: 2·H·W·D FLOPs, one (G x W) @ (W x D) matmul per position and key/value head
  over an unfolded view of the values.
Both are linear in T; the global branch stays quadratic. `benchmarks/variant_speed.py` measures
the time and memory against the baseline block.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinygpt.config import ModelConfig
from tinygpt.model.attention import CausalSelfAttention
from tinygpt.model.kv_cache import CacheStep, LayerCache


# B batch, T time, H query heads, K key/value heads, G = H / K, D head dim, A local_dim, W window
class HybridAttention(CausalSelfAttention):
    """CausalSelfAttention whose heads also read a causal local window through additive scores."""

    def __init__(self, config: ModelConfig) -> None:
        H, K, A = config.n_head, config.kv_heads, config.local_dim
        # the local queries and keys come out of the same fused projection as q, k and v
        super().__init__(config, feature_widths=(H * A, K * A))
        self.local_window = config.local_window
        self.local_dim = A
        self.score_vector = nn.Parameter(torch.randn(H, A) / math.sqrt(A))  # w_h
        self.gate_logit = nn.Parameter(torch.zeros(H))  # sigmoid(0) = 1/2: both branches count
        self.local_dropout = nn.Dropout(config.attention_weight_dropout)  # on the local weights

    def forward(
        self, x: Tensor, cache: LayerCache | None = None, step: CacheStep | None = None
    ) -> Tensor:
        B, T, _ = x.shape
        H, K, A = self.n_head, self.n_kv_head, self.local_dim
        qkv_width = sum(self.split_sizes[:3])
        qkv, local_queries, local_keys = self.qkv(x).split([qkv_width, H * A, K * A], dim=2)
        q, k, v = self.split_heads(qkv, step)
        local_queries = local_queries.view(B, T, H, A).transpose(1, 2)  # (B, H, T, A)
        local_keys = local_keys.view(B, T, K, A).transpose(1, 2)  # (B, K, T, A)
        if cache is None:
            global_out = self.attend(q, k, v)  # (B, H, T, D)
            local_out = self.attend_local(local_queries, local_keys, v)
        else:
            assert step is not None, "a cached forward needs the cache's step"
            global_out = self.attend_cached(q, k, v, cache, step)  # stores k and v
            all_local_keys = cache.append_local(local_keys, step)  # (B, K, T_all, A)
            values = cache.values[:, :, : step.end]  # (B, K, T_all, D)
            local_out = self.attend_local(local_queries, all_local_keys, values, step.first_slot)
        return self.merge_heads(self.mix(global_out, local_out))

    def attend_local(
        self,
        local_queries: Tensor,
        local_keys: Tensor,
        values: Tensor,
        first_valid: Tensor | None = None,
    ) -> Tensor:
        """The local branch, with dropout on its weights in training: local_queries
        (B, H, T, A) of the last T of the T_all positions in local_keys (B, K, T_all, A) and
        values (B, K, T_all, D) -> (B, H, T, D); see `local_attention_weights` for
        `first_valid`."""
        return local_additive_attention(
            local_queries,
            local_keys,
            values,
            self.score_vector,
            self.local_window,
            first_valid,
            self.local_dropout,
        )

    def mix(self, global_out: Tensor, local_out: Tensor) -> Tensor:
        """g_h global_h + (1 - g_h) local_h for each head h: (B, H, T, D) each -> (B, H, T, D)."""
        H = global_out.size(1)
        return torch.lerp(local_out, global_out, self.gate().view(1, H, 1, 1).to(global_out.dtype))

    def gate(self) -> Tensor:
        """Per-head weight of the global branch, in (0, 1); (H,)."""
        return torch.sigmoid(self.gate_logit)


def _windows(features: Tensor, queries: int, window: int) -> Tensor:
    """(B, K, T_all, X) -> (B, K, queries, W, X): for each of the last `queries` positions, the
    features of its window of W positions ending at itself, as an unfolded view (positions
    before the first are zeros)."""
    T_all = features.size(2)
    first_row = T_all - queries - (window - 1)  # may be negative: that much left padding
    rows = F.pad(features[:, :, max(0, first_row) :], (0, 0, max(0, -first_row), 0))
    return rows.unfold(2, window, 1).transpose(-1, -2)


def _outside_window(
    T_all: int, queries: int, window: int, first_valid: Tensor | None, device: torch.device
) -> Tensor:
    """True for window slots before a sequence's first position: (T, W), or (B, 1, T, W) when
    sequences start at their own `first_valid` slot (left-padded batches)."""
    query_slots = torch.arange(T_all - queries, T_all, device=device)  # (T,)
    slots = query_slots.view(-1, 1) - (window - 1) + torch.arange(window, device=device)  # (T, W)
    if first_valid is None:
        return slots < 0
    # the last slot is the query itself, always visible (see KVCache._mask: padding rows too)
    outside = slots < first_valid.view(-1, 1, 1)  # (B, T, W)
    outside[..., -1] = False
    return outside.unsqueeze(1)


def local_attention_weights(
    query_features: Tensor,
    key_features: Tensor,
    score_vector: Tensor,
    window: int,
    first_valid: Tensor | None = None,
) -> Tensor:
    """Additive attention weights over each position's causal window.

    query_features (B, H, T, A) for the last T of the T_all positions in key_features
    (B, K, T_all, A) (T_all = T in training; more with a KV cache), score_vector (H, A) ->
    weights (B, H, T, W) with W = min(window, T_all): slot w of row t holds the weight of
    position t - W + 1 + w (the last slot is t itself); slots before position 0, or before
    `first_valid[b]` (B,) for left-padded sequences, get weight 0.
    """
    B, H, T, A = query_features.shape
    K, T_all = key_features.size(1), key_features.size(2)
    W = min(window, T_all)
    # Keys of positions t-W+1..t for every t: an unfolded view over W-1 zeros of left padding.
    # The features are doubled here, on the small per-position tensors, for `_TanhOfHalf`.
    windows = _windows(2 * key_features, T, W).unsqueeze(2)  # (B, K, 1, T, W, A)
    # query heads grouped by their kv head; contiguous, so the band below is laid out head-major
    queries = (2 * query_features).reshape(B, K, H // K, T, 1, A).contiguous()
    hidden = _TanhOfHalf.apply(queries + windows)  # (B, K, G, T, W, A) = tanh(q' + k')
    weight = score_vector.to(hidden.dtype).view(H, A, 1)
    scores = hidden.view(B, H, T * W, A) @ weight  # (B, H, T * W, 1)
    scores = scores.view(B, H, T, W).to(torch.promote_types(scores.dtype, torch.float32))
    outside = _outside_window(T_all, T, W, first_valid, scores.device)
    return scores.masked_fill(outside, float("-inf")).softmax(-1)  # softmax in >= fp32


class _TanhOfHalf(torch.autograd.Function):
    """tanh(x / 2) computed as 2 sigmoid(x) - 1, with tanh's own backward.

    The same numbers as torch.tanh, cheaper on this band of B·H·T·W·A values: on the CPUs we
    measured, PyTorch's tanh is 8x slower than its sigmoid (14 vs 1.8 ms on 6M values), while
    sigmoid's backward is 3x slower than tanh's (8 vs 2.7 ms). The input arrives doubled (from
    the small per-position features), so no pass over the band is spent scaling it."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, doubled: Tensor) -> Tensor:
        out = torch.sigmoid(doubled).mul_(2).sub_(1)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        # d tanh(x/2) / dx = (1 - tanh(x/2)^2) / 2
        return torch.ops.aten.tanh_backward(grad, out).mul_(0.5)


def band_to_dense(band: Tensor) -> Tensor:
    """(..., T, W) band -> (..., T, T) lower-triangular matrix with out[t, t-W+1+w] = band[t, w]
    and zeros elsewhere, by padding and re-striding (the "skew" of Huang et al. 2018)."""
    *lead, T, W = band.shape
    padded = F.pad(band, (0, T))  # (..., T, W + T): row t's entries start at flat t*(W+T)
    skewed = padded.flatten(-2)[..., : T * (W + T - 1)].view(*lead, T, W + T - 1)
    return skewed[..., W - 1 :]  # (..., T, T): band[t, w] sits in column t + w - (W - 1)


def local_additive_attention(
    query_features: Tensor,
    key_features: Tensor,
    v: Tensor,
    score_vector: Tensor,
    window: int,
    first_valid: Tensor | None = None,
    weight_dropout: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The local branch: additive attention of each position over its last `window` positions.
    v (B, K, T_all, D); see `local_attention_weights` for the rest; `weight_dropout` applies to
    the weights (B, H, T, W). -> (B, H, T, D)."""
    B, H, T, _ = query_features.shape
    K, D = v.shape[1], v.shape[-1]
    weights = local_attention_weights(
        query_features, key_features, score_vector, window, first_valid
    )
    if weight_dropout is not None:
        weights = weight_dropout(weights)
    weights = weights.to(v.dtype)
    W = weights.size(-1)
    windows = _windows(v, T, W)  # (B, K, T, W, D)
    grouped = weights.view(B, K, H // K, T, W).transpose(2, 3)  # (B, K, T, G, W)
    out = grouped @ windows  # (B, K, T, G, D): one small matmul per position and kv head
    return out.transpose(2, 3).reshape(B, H, T, D)


def make_attention(config: ModelConfig) -> CausalSelfAttention:
    return HybridAttention(config) if config.attention == "hybrid" else CausalSelfAttention(config)
