"""Gradient checkpointing (Chen et al. 2016, https://arxiv.org/abs/1604.06174), applied by the
trainer to the model it builds (`train.gradient_checkpointing`): each block keeps only its input
for backward, and backward reruns the block to get the rest. Far fewer activations are kept
between forward and backward, for about one more forward pass of compute.

It wraps each block's `forward` from outside, as torchtitan applies activation checkpointing, so
the model has no flag for it and its state dict and module names stay the same. The wrapper
sits inside an FSDP unit's hooks (`fully_shard(block)` comes after), which is where FSDP expects
it: backward gathers the block's weights before the rerun needs them.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from tinygpt.model.gpt import GPT, Block
from tinygpt.model.kv_cache import CacheStep, LayerCache


def checkpoint_blocks(model: GPT) -> None:
    """Recompute each block of `model` in backward, in place (once: a second call changes
    nothing)."""
    for block in model.blocks:
        if not isinstance(vars(block).get("forward"), RecomputedForward):
            block.forward = RecomputedForward(block)


class RecomputedForward:
    """A block's forward that, in training with gradients on, keeps only the block's input and
    reruns the block in backward, after restoring the RNG state, so dropout draws the same masks
    again. Evaluation and generation (no gradients, or a KV cache) run the block as it is."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self.run = block.forward  # the class's own forward, bound

    def __call__(
        self, x: Tensor, cache: LayerCache | None = None, step: CacheStep | None = None
    ) -> Tensor:
        if cache is None and self.block.training and torch.is_grad_enabled():
            return checkpoint(self.run, x, use_reentrant=False)
        return self.run(x, cache, step)
