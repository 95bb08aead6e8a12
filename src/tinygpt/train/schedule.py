"""Learning-rate schedules as pure functions of the step.

A function of the step, not a stateful scheduler object, so resuming needs nothing but the step.
"""

from __future__ import annotations

import math

from tinygpt.config import TrainConfig


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to `learning_rate`, then the chosen decay down to `min_lr`."""
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / (config.warmup_iters + 1)
    if config.lr_schedule == "constant":
        return config.learning_rate
    decay_iters = config.lr_decay_iters or config.max_iters
    if config.lr_schedule == "wsd":
        return _warmup_stable_decay(step, config, decay_iters)
    since_warmup = step - config.warmup_iters
    if config.lr_schedule == "cosine_restarts":
        first_cycle = config.restart_iters or max(1, decay_iters - config.warmup_iters)
        progress = _position_in_cycle(since_warmup, first_cycle, config.restart_mult)
    else:
        if step >= decay_iters:
            return config.min_lr
        progress = since_warmup / max(1, decay_iters - config.warmup_iters)
    return _cosine(progress, config.learning_rate, config.min_lr)


def _warmup_stable_decay(step: int, config: TrainConfig, decay_iters: int) -> float:
    """Flat at `learning_rate`, then over the last `decay_fraction` of `decay_iters` a 1-sqrt
    decay, whose last step (decay_iters - 1) trains at `min_lr` exactly. WSD needs no horizon
    until the decay starts, and its 1-sqrt cool-down matched or beat a cosine tuned to the full
    length (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
    Training Durations", arXiv:2405.18392, where 1-sqrt beat a linear cool-down)."""
    decay_steps = max(1, round(config.decay_fraction * decay_iters))
    decay_start = max(config.warmup_iters, decay_iters - decay_steps)
    if step < decay_start:
        return config.learning_rate
    if step >= decay_iters - 1:
        return config.min_lr
    progress = (step - decay_start + 1) / (decay_iters - decay_start)
    return config.min_lr + (1.0 - math.sqrt(progress)) * (config.learning_rate - config.min_lr)


def _cosine(progress: float, high: float, low: float) -> float:
    """Half a cosine from `high` (progress 0) to `low` (progress 1)."""
    return low + 0.5 * (1.0 + math.cos(math.pi * progress)) * (high - low)


def _position_in_cycle(step: int, first_cycle: int, mult: int) -> float:
    """SGDR (Loshchilov & Hutter 2017): cycles of length first_cycle * mult**i; returns how far
    into its cycle `step` is, in [0, 1). Same cycles as torch's CosineAnnealingWarmRestarts."""
    if mult == 1:
        return (step % first_cycle) / first_cycle
    # cycle i starts at first_cycle * (mult**i - 1) / (mult - 1)
    cycle = int(math.log(step * (mult - 1) / first_cycle + 1, mult))
    start = first_cycle * (mult**cycle - 1) // (mult - 1)
    length = first_cycle * mult**cycle
    if step < start:  # guard float rounding of the log at a cycle boundary
        cycle -= 1
        length //= mult
        start -= length
    elif step >= start + length:
        start += length
        length *= mult
    return (step - start) / length
