"""Causal multi-head self-attention through PyTorch's fused `scaled_dot_product_attention`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinygpt.config import ModelConfig
from tinygpt.model.dropout import Dropout, dropout


# B batch, T time, C n_embd, H heads, D head dim
class CausalSelfAttention(nn.Module):
    """Multi-head attention where position t sees positions 0..t only.

    One fused `qkv` projection (a single matmul is faster than three on CPU), then SDPA, which
    dispatches to a flash / memory-efficient kernel and never materialises the T x T mask.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True  # scaled at init, see GPT._init_weights
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        if self.training and self.dropout > 0 and x.device.type == "cpu":
            y = causal_attention_with_dropout(q, k, v, self.dropout)  # (B, H, T, D)
        else:
            dropout_p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


def causal_attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, p: float) -> Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) with dropout, then times v; q, k, v (B, H, T, D).

    SDPA's fused CPU kernels refuse dropout, and its fallback draws the dropout mask one
    Bernoulli sample at a time; written out, the mask comes from `tinygpt.model.dropout`.
    Tested equal to SDPA when p = 0.
    """
    T, D = q.size(-2), q.size(-1)
    scores = (q * (1.0 / math.sqrt(D))) @ k.transpose(-2, -1)  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)  # (T, T)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)  # (B, H, T, T)
    return dropout(weights, p, training=True).to(v.dtype) @ v  # (B, H, T, D)
