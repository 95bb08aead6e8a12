"""Rotary position embeddings (Su et al. 2021, RoFormer): positions as rotations of q and k.

Each pair of channels (i, i + D/2) of a head is rotated by the angle position x theta^(-2i/D),
so the score q_m . k_n depends on the positions only through m - n: attention sees relative
positions, and nothing is added to the token embeddings.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_positions: int, theta: float = 10000.0) -> None:
        super().__init__()
        inverse_frequencies = theta ** -(torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.outer(torch.arange(max_positions).float(), inverse_frequencies)
        # (T_max, D/2); not saved in checkpoints: derived from the config
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Rotate x (B, heads, T, D) for positions 0..T-1, or for `positions` (B, T) (cached
        generation: each sequence's own positions)."""
        T, half = x.size(-2), x.size(-1) // 2
        if positions is None:
            cos, sin = self.cos[:T], self.sin[:T]  # (T, D/2)
        else:
            cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, D/2) or (B, 1, T, D/2)
        first, second = x[..., :half], x[..., half:]  # 2 x (B, heads, T, D/2)
        return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
