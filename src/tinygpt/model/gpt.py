"""A decoder-only GPT: token + learned position embeddings, pre-norm blocks, a tied output head;
or, by config, RoPE, RMSNorm, gated FFNs, grouped-query or hybrid attention, adaptive softmax."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tinygpt.config import ModelConfig
from tinygpt.model.hybrid_attention import make_attention
from tinygpt.model.kv_cache import CacheStep, KVCache, LayerCache
from tinygpt.model.loss import IGNORE_INDEX, language_model_loss
from tinygpt.model.mlp import feed_forward
from tinygpt.model.norm import make_norm


class Block(nn.Module):
    """Pre-norm residual block (GPT-2): x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = make_attention(config)
        self.ln_2 = make_norm(config)
        self.mlp = feed_forward(config)

    def forward(
        self, x: Tensor, cache: LayerCache | None = None, step: CacheStep | None = None
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, step)
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
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        # (n_layer,) each: the weight of the stream and of the embedding in each block's input
        self.embed_mix_x = nn.Parameter(torch.ones(config.n_layer)) if config.embed_mix else None
        self.embed_mix_x0 = nn.Parameter(torch.zeros(config.n_layer)) if config.embed_mix else None
        if config.output == "adaptive":
            self.lm_head = None
            self.adaptive_head = nn.AdaptiveLogSoftmaxWithLoss(
                config.n_embd, config.vocab_size, config.cutoffs, div_value=4.0
            )
        else:
            self.adaptive_head = None
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            if config.tie_weights:
                # Press & Wolf 2017: one matrix both embeds tokens and scores them.
                self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer) so the residual
        stream's variance does not grow with depth. `xavier` (the char-level tinygpt spec,
        docs/specs.md) uses Glorot-uniform for every Linear instead. Embeddings are N(0, 0.02) in
        both (the tied head is an embedding). `zero_init_proj` starts the residual projections at
        zero instead (modded-nanogpt): each block then starts as the identity, and the stream
        holds only the embedding until the projections learn."""
        if isinstance(module, nn.Linear):
            residual = getattr(module, "is_residual_projection", False)
            if residual and self.config.zero_init_proj:
                nn.init.zeros_(module.weight)
            elif self.config.init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                std = 0.02
                if residual:
                    std /= math.sqrt(2 * self.config.n_layer)
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Token ids (B, T) -> the final normalised residual stream (B, T, C). With a cache, idx
        holds only the new tokens, which continue the cached ones."""
        T = idx.size(1)
        block_size = self.config.block_size
        start = cache.length if cache is not None else 0
        if start + T > block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {block_size}")
        x = self.wte(idx)  # (B, T, C)
        step = cache.begin(T) if cache is not None else None
        if self.wpe is not None:
            positions = step.positions if step is not None else torch.arange(T, device=idx.device)
            x = x + self.wpe(positions)  # (B, T, C) or (T, C) broadcast over B
        x = x0 = self.drop(x)
        if cache is None:
            for layer, block in enumerate(self.blocks):
                x = block(self.mix_in_embedding(x, x0, layer))
        else:
            for layer, (block, layer_cache) in enumerate(
                zip(self.blocks, cache.layers, strict=True)
            ):
                x = block(self.mix_in_embedding(x, x0, layer), layer_cache, step)
            cache.end(step)
        return self.ln_f(x)

    def mix_in_embedding(self, x: Tensor, x0: Tensor, layer: int) -> Tensor:
        """Block `layer`'s input: the stream x (B, T, C) as it is, or with `embed_mix`
        a * x + b * x0, x0 the embedding output and a, b that block's learned scalars, starting
        at 1 and 0 so the model starts as the plain one: modded-nanogpt's "x0 residual", which
        lets every layer read the tokens themselves however far the stream has drifted from
        them. The scalars live here, not in the blocks, so a wrapped block keeps its signature."""
        if self.embed_mix_x is None:
            return x
        return self.embed_mix_x[layer] * x + self.embed_mix_x0[layer] * x0  # (B, T, C)

    def forward(
        self, idx: Tensor, last_token_only: bool = False, cache: KVCache | None = None
    ) -> Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V), or (B, 1, V) for the last position
        only. With adaptive softmax the "logits" are log-probabilities, which softmax, sampling
        and cross-entropy treat exactly like logits. With a `cache` (generation), idx holds only
        the tokens after the cached ones."""
        x = self.hidden_states(idx, cache)
        if last_token_only:
            x = x[:, -1:, :]  # (B, 1, C): sampling needs only the next-token distribution
        if self.adaptive_head is not None:
            B, T, C = x.shape
            with _full_precision(x):
                return self.adaptive_head.log_prob(x.reshape(B * T, C).float()).view(B, T, -1)
        return self.logits(x)

    def logits(self, x: Tensor) -> Tensor:
        """The output head: hidden states (B, T, C) -> logits (B, T, V), soft-capped with
        `logit_softcap` (Gemma 2, arXiv:2408.00118; modded-nanogpt caps at 30, then 15):
        cap * tanh(logits / cap) keeps every logit within +-cap, so the model cannot buy a lower
        loss with ever larger logits. The cap is taken in fp32 (a bf16 tanh near +-cap is coarse),
        so capped logits are fp32 under autocast too."""
        logits = self.lm_head(x)  # (B, T, V)
        if self.config.logit_softcap:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits.float() / cap)
        return logits

    def new_cache(
        self, batch: int, capacity: int | None = None, first_slot: Tensor | None = None
    ) -> KVCache:
        """An empty KV cache for `batch` sequences (left-padded ones start at `first_slot`)."""
        weight = self.wte.weight
        return KVCache(
            self.config,
            batch,
            capacity or self.config.block_size,
            weight.device,
            weight.dtype,
            first_slot,
        )

    def loss(self, idx: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Mean next-token cross-entropy of `targets` (B, T); IGNORE_INDEX targets do not count.

        Training calls this rather than `forward`, so adaptive softmax can score only the target's
        cluster instead of the whole vocabulary (that is its speed-up)."""
        x = self.hidden_states(idx)
        if self.adaptive_head is None:
            return language_model_loss(self.logits(x), targets, label_smoothing)
        if label_smoothing:
            raise ValueError("label smoothing needs the full softmax; use output=softmax")
        counted = targets != IGNORE_INDEX  # (B, T)
        B, T, C = x.shape
        with _full_precision(x):
            target_log_probs = self.adaptive_head(
                x.reshape(B * T, C).float(), targets.clamp(min=0).reshape(B * T)
            ).output  # (B * T,)
        return -(target_log_probs * counted.view(-1)).sum() / counted.sum().clamp(min=1)

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
        config = self.config
        T = seq_len or config.block_size
        matmul_weights = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        attention = 12.0 * config.n_layer * config.n_embd * T
        if config.attention == "hybrid":
            # the local branch: weights times a window of values, and the additive score vector
            window = min(config.local_window, T)
            local = window * (config.n_embd + config.n_head * config.local_dim)
            attention += 6.0 * config.n_layer * local
        return 6.0 * matmul_weights + attention


def _full_precision(x: Tensor) -> torch.autocast:
    """Autocast off: AdaptiveLogSoftmaxWithLoss writes cluster results into a tensor of its
    input's dtype, which breaks when autocast makes the cluster matmuls bf16 (and the
    log-softmax wants fp32 anyway)."""
    return torch.autocast(device_type=x.device.type, enabled=False)
