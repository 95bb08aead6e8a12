"""A decoder-only GPT: token + learned position embeddings, pre-norm blocks, a tied output head."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tinygpt.config import ModelConfig
from tinygpt.model.attention import CausalSelfAttention
from tinygpt.model.dropout import Dropout
from tinygpt.model.mlp import feed_forward
from tinygpt.model.norm import make_norm


class Block(nn.Module):
    """Pre-norm residual block (GPT-2): x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = feed_forward(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


# B batch, T time, C n_embd, V vocab
class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError(
                "ModelConfig.vocab_size must be set (from the tokenizer) to build a GPT"
            )
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        # with RoPE, positions enter as rotations inside attention instead
        self.wpe = (
            nn.Embedding(config.block_size, config.n_embd) if config.position == "learned" else None
        )
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            # Press & Wolf 2017: one matrix both embeds tokens and scores them.
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer) so the residual
        stream's variance does not grow with depth. `xavier` (seed 004) uses Glorot-uniform for
        every Linear instead. Embeddings are N(0, 0.02) in both (the tied head is an embedding)."""
        if isinstance(module, nn.Linear):
            if self.config.init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                std = 0.02
                if getattr(module, "is_residual_projection", False):
                    std /= math.sqrt(2 * self.config.n_layer)
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor, last_token_only: bool = False) -> Tensor:
        """Token ids (B, T) -> logits (B, T, V), or (B, 1, V) for the last position only."""
        T = idx.size(1)
        block_size = self.config.block_size
        if T > block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {block_size}")
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))  # (T, C) broadcast over B
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        if last_token_only:
            x = x[:, -1:, :]  # (B, 1, C): sampling needs only the next-token distribution
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without position embeddings (nanoGPT's convention: they
        are a lookup, not compute). The tied token embedding counts once, as the output head."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding and self.wpe is not None:
            return total - self.wpe.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token: 6 per weight of every matmul plus the
        attention scores, 12 * n_layer * n_embd * T (PaLM, Chowdhery et al. 2022, appendix B;
        the estimate nanoGPT's MFU uses, so figures compare)."""
        T = seq_len or self.config.block_size
        matmul_weights = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6.0 * matmul_weights + 12.0 * self.config.n_layer * self.config.n_embd * T
