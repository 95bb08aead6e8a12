"""Normalisation layers: LayerNorm (GPT-2) or RMSNorm (Zhang & Sennrich 2019, Llama)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tinygpt.config import ModelConfig


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * gain: LayerNorm without centring or bias, cheaper and as
    good in practice. Statistics in fp32, then cast back, so bf16 activations stay stable."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd)
    return nn.LayerNorm(config.n_embd, bias=config.bias)
