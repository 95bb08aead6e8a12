"""The position-wise feed-forward network of a transformer block."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tinygpt.config import ModelConfig


def gelu(config: ModelConfig) -> nn.GELU:
    """The exact (erf) GELU, or GPT-2's tanh approximation for weights trained with it."""
    return nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")


class ReLUSquared(nn.Module):
    """relu(x)^2 (So et al. 2021, "Primer", arXiv:2109.08668): their search's best single change to
    the transformer, and modded-nanogpt's MLP activation. Cheaper than GELU and sparse."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()


def activation(config: ModelConfig) -> nn.Module:
    """The plain MLP's non-linearity: `activation=relu2`, or a GELU."""
    return ReLUSquared() if config.activation == "relu2" else gelu(config)


class GatedMLP(nn.Module):
    """act(x W_gate) * (x W_up), then W_down (Shazeer 2020, "GLU Variants Improve Transformer"):
    SwiGLU (SiLU gate, the Llama recipe) or GEGLU (GELU gate). The gate and up projections are
    one fused matmul, like attention's qkv."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 2 * config.ffn_width, bias=config.bias)
        self.act = nn.SiLU() if config.ffn == "swiglu" else gelu(config)
        self.proj = nn.Linear(config.ffn_width, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True  # scaled at init, see GPT._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.fc(x).chunk(2, dim=-1)  # 2 x (B, T, ffn_width)
        return self.resid_dropout(self.proj(self.act(gate) * up))


def feed_forward(config: ModelConfig) -> nn.Module:
    return MLP(config) if config.ffn == "mlp" else GatedMLP(config)


class MLP(nn.Module):
    """Two linear layers with a GELU (or, by config, ReLU squared) between them.

    By default the exact (erf) GELU, as in nanoGPT: on CPU it runs 3x faster than GPT-2's tanh
    approximation, and Hugging Face's GPT-2 reads it as `activation_function="gelu"`. The tanh
    one (`activation=gelu_tanh`, transformers' "gelu_new") is there for checkpoints trained
    with it, such as OpenAI's GPT-2: the two differ by up to ~1e-3 per activation, enough to
    move logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.ffn_width, bias=config.bias)
        self.act = activation(config)
        self.proj = nn.Linear(config.ffn_width, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True  # scaled at init, see GPT._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.resid_dropout(self.proj(self.act(self.fc(x))))
