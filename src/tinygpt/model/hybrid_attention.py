"""Hybrid attention (seed 000): global grouped-query softmax attention plus a local additive
(Bahdanau-style) branch over the last `local_window` tokens, mixed by a learned per-head gate.

For head h at position t:

    global_h(t) = causal softmax attention over positions 0..t (GQA, RoPE as configured)
    local_h(t)  = sum over s in t-W+1..t of a(t, s) v_s,
                  a(t, ·) = softmax_s( w_h^T tanh(q'_t + k'_s) )      (Bahdanau et al. 2015)
    y_h(t)      = g_h global_h(t) + (1 - g_h) local_h(t),   g_h = sigmoid(learned scalar)

q' = W_q x and k' = W_k x are `local_dim`-wide features from the same fused input projection as
q, k, v; the local branch reuses the global branch's values (so GQA's value sharing holds too).

Cost, per token and layer, with W = local_window, A = local_dim, H heads of width D, G query
heads per key/value head:
- scores: H·W·A additions, sigmoids and multiply-adds, computed on the band only (an unfolded
  view of the keys, never a T x T x A tensor); backward keeps the B·H·T·W·A sigmoid outputs, so
  activation memory grows with W·A per head, not with the context length.
- weighted sum: 2·H·W·D FLOPs, one (G x W) @ (W x D) matmul per position and key/value head
  over an unfolded view of the values.
Both are linear in T; the global branch stays quadratic. `benchmarks/variant_speed.py` measures
the time and memory against the baseline block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinygpt.config import ModelConfig
from tinygpt.model.attention import CausalSelfAttention
from tinygpt.model.dropout import dropout


# B batch, T time, H query heads, K key/value heads, G = H / K, D head dim, A local_dim, W window
class HybridAttention(CausalSelfAttention):
    """CausalSelfAttention whose heads also read a causal local window through additive scores."""

    def __init__(self, config: ModelConfig) -> None:
        H, K, A = config.n_head, config.kv_heads, config.local_dim
        super().__init__(config, extra_width=(H * A, K * A))
        self.local_window = config.local_window
        self.local_dim = A
        self.score_vector = nn.Parameter(torch.randn(H, A) / math.sqrt(A))  # w_h
        self.gate_logit = nn.Parameter(torch.zeros(H))  # sigmoid(0) = 1/2: both branches count

    def attend(self, q: Tensor, k: Tensor, v: Tensor, extra: list[Tensor]) -> Tensor:
        B, H, T, _ = q.shape
        K, A = k.size(1), self.local_dim
        query_features, key_features = extra  # (B, T, H * A), (B, T, K * A)
        global_out = super().attend(q, k, v, extra)  # (B, H, T, D)
        local_out = local_additive_attention(
            query_features.view(B, T, H, A).transpose(1, 2),
            key_features.view(B, T, K, A).transpose(1, 2),
            v,
            self.score_vector,
            self.local_window,
            self.dropout if self.training else 0.0,
        )  # (B, H, T, D)
        return torch.lerp(local_out, global_out, self.gate().view(1, H, 1, 1).to(q.dtype))

    def gate(self) -> Tensor:
        """Per-head weight of the global branch, in (0, 1); (H,)."""
        return torch.sigmoid(self.gate_logit)


def local_attention_weights(
    query_features: Tensor, key_features: Tensor, score_vector: Tensor, window: int
) -> Tensor:
    """Additive attention weights over each position's causal window.

    query_features (B, H, T, A), key_features (B, K, T, A), score_vector (H, A) ->
    weights (B, H, T, W) with W = min(window, T): slot w of row t holds the weight of position
    t - W + 1 + w (the last slot is t itself); slots before position 0 get weight 0.
    """
    B, H, T, A = query_features.shape
    K = key_features.size(1)
    W = min(window, T)
    # w^T tanh(x) is computed as (2w)^T sigmoid(2x) - sum(w): the same number, since
    # tanh(x) = 2 sigmoid(2x) - 1, but PyTorch's CPU sigmoid is 8x faster than its tanh (1.8 vs
    # 14 ms on 6M values). The factor 2 goes on the small per-position features, not the band.
    # Keys of positions t-W+1..t for every t: an unfolded view over W-1 zeros of left padding.
    windows = F.pad(2 * key_features, (0, 0, W - 1, 0)).unfold(2, W, 1)  # (B, K, T, A, W)
    windows = windows.transpose(-1, -2).unsqueeze(2)  # (B, K, 1, T, W, A)
    # query heads grouped by their kv head; contiguous, so the band below is laid out head-major
    queries = (2 * query_features).reshape(B, K, H // K, T, 1, A).contiguous()
    gates = torch.sigmoid(queries + windows)  # (B, K, G, T, W, A)
    weight = score_vector.to(gates.dtype)
    scores = gates.view(B, H, T * W, A) @ (2 * weight).view(H, A, 1)  # (B, H, T * W, 1)
    scores = scores - weight.sum(-1).view(1, H, 1, 1)
    before_start = (
        torch.arange(T, device=scores.device).view(T, 1)
        + torch.arange(W, device=scores.device).view(1, W)
        < W - 1
    )  # (T, W)
    scores = scores.view(B, H, T, W).to(torch.promote_types(scores.dtype, torch.float32))
    return scores.masked_fill(before_start, float("-inf")).softmax(-1)  # softmax in >= fp32


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
    dropout_p: float = 0.0,
) -> Tensor:
    """The local branch: additive attention of each position over its last `window` positions.
    v (B, K, T, D); see `local_attention_weights` for the rest. -> (B, H, T, D)."""
    B, H, T, _ = query_features.shape
    K, D = v.shape[1], v.shape[-1]
    weights = local_attention_weights(query_features, key_features, score_vector, window)
    weights = dropout(weights, dropout_p, training=dropout_p > 0).to(v.dtype)
    W = weights.size(-1)
    # values of positions t-W+1..t for every t, as an unfolded view over W-1 zeros of padding
    windows = F.pad(v, (0, 0, W - 1, 0)).unfold(2, W, 1).transpose(-1, -2)  # (B, K, T, W, D)
    grouped = weights.view(B, K, H // K, T, W).transpose(2, 3)  # (B, K, T, G, W)
    out = grouped @ windows  # (B, K, T, G, D): one small matmul per position and kv head
    return out.transpose(2, 3).reshape(B, H, T, D)


def make_attention(config: ModelConfig) -> CausalSelfAttention:
    return HybridAttention(config) if config.attention == "hybrid" else CausalSelfAttention(config)
