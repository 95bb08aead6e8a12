"""The position-wise feed-forward network of a transformer block."""

from __future__ import annotations

from torch import Tensor, nn

from tinygpt.config import ModelConfig


class MLP(nn.Module):
    """Two linear layers with a GELU between them (GPT-2's `gelu_new`, the tanh approximation,
    so an exported model matches Hugging Face's GPT2LMHeadModel exactly)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.ffn_width, bias=config.bias)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(config.ffn_width, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True  # scaled at init, see GPT._init_weights
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))
