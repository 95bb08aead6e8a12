"""The training loop's evaluation: the mean loss of each split over fixed batches.

The batches come from their own generator (seed + 1), the same at every evaluation, so
successive values differ only because the model changed, and evaluating never shifts the
training stream (exact resume holds)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from tinygpt.data.memmap import fixed_eval_batches
from tinygpt.model.loss import IGNORE_INDEX
from tinygpt.train import distributed

if TYPE_CHECKING:
    from tinygpt.train.loop import Trainer

EVAL_TOKENS_PER_FORWARD = 8192  # tokens per evaluation forward pass, at least one batch


@torch.no_grad()
def evaluate_fixed_batches(trainer: Trainer) -> dict[str, float]:
    """Mean cross-entropy (no label smoothing) over eval_iters x batch_size sequences of
    each split. Small models are evaluated in larger batches (EVAL_TOKENS_PER_FORWARD), which
    changes nothing but the speed."""
    cfg, block = trainer.config.train, trainer.config.model.block_size
    sequences = cfg.eval_iters * cfg.batch_size
    rows = min(sequences, max(cfg.batch_size, EVAL_TOKENS_PER_FORWARD // block))
    forwards = math.ceil(sequences / rows)
    if trainer.context.is_distributed:
        return _evaluate_across_ranks(trainer, rows, forwards)
    trainer.model.eval()
    losses = {}
    for split, tokens in (("train", trainer.train_tokens), ("val", trainer.val_tokens)):
        total = torch.zeros((), device=trainer.runtime.device)
        mask = trainer.loss_masks[split]
        for x, y in fixed_eval_batches(tokens, block, rows, forwards, cfg.seed + 1, mask):
            x, y = trainer.to_device(x, y)
            with trainer.runtime.autocast():
                total += trainer.compute_loss(x, y)
        losses[split] = total.item() / forwards
    return losses


def _evaluate_across_ranks(trainer: Trainer, rows: int, forwards: int) -> dict[str, float]:
    """`evaluate_fixed_batches` with each forward's rows split across the ranks: the same
    sequences and the same per-forward mean as one process (up to rounding), whatever the
    number of ranks. Every rank runs every forward (FSDP gathers parameters collectively); a
    rank left without rows reruns one row and counts it zero times."""
    cfg, block = trainer.config.train, trainer.config.model.block_size
    rank, world_size = trainer.context.rank, trainer.context.world_size
    trainer.wrapped.eval()  # type: ignore[union-attr]
    # (split, forward, [sum of token losses, tokens])
    sums = torch.zeros(2, forwards, 2, device=trainer.runtime.device)
    splits = (("train", trainer.train_tokens), ("val", trainer.val_tokens))
    for index, (split, tokens) in enumerate(splits):
        mask = trainer.loss_masks[split]
        batches = fixed_eval_batches(tokens, block, rows, forwards, cfg.seed + 1, mask)
        for forward, (x_all, y_all) in enumerate(batches):
            x, y = x_all.tensor_split(world_size)[rank], y_all.tensor_split(world_size)[rank]
            weight = 1.0
            if len(x) == 0:
                x, y, weight = x_all[:1], y_all[:1], 0.0
            x, y = trainer.to_device(x, y)
            tokens_counted = (y != IGNORE_INDEX).sum() * weight
            with trainer.runtime.autocast():
                loss = trainer.compute_loss(x, y)
            sums[index, forward, 0] = loss.float() * tokens_counted
            sums[index, forward, 1] = tokens_counted
    distributed.sum_then_share(sums)
    means = (sums[..., 0] / sums[..., 1].clamp(min=1)).mean(dim=1).tolist()  # (split,)
    return dict(zip(("train", "val"), means, strict=True))
