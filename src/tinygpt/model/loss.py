"""The language-modelling loss, kept outside the model so training and evaluation choose it."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -1  # targets with this id (padding, masked turns) do not count


def language_model_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean next-token cross-entropy over every position whose target is not IGNORE_INDEX.

    logits (B, T, V), targets (B, T). Computed in fp32 whatever the autocast dtype, because the
    log-sum-exp over the vocabulary loses precision in bf16. A batch whose targets are all
    ignored (a window of dialog without a Bot turn) gives 0, not the NaN of an empty mean.
    """
    B, T, V = logits.shape
    total = F.cross_entropy(
        logits.float().view(B * T, V),
        targets.view(B * T),
        ignore_index=IGNORE_INDEX,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)
