"""How long an optimizer step of a config takes here, measured on the real training step
without a run directory: `compare --minutes` turns a time budget into steps with it."""

from __future__ import annotations

import time

from tinygpt.config import RunConfig
from tinygpt.data.prepare import PreparedData
from tinygpt.train.loop import Trainer


def time_train_steps(config: RunConfig, prepared: PreparedData, steps: int) -> list[float]:
    """Seconds of each of `steps` optimizer steps of a fresh trainer on `prepared`, after one
    warm-up step (allocation, compilation). `.item()` waits for the GPU: each time is of
    finished work. Nothing is written: the trainer has no run directory."""
    trainer = Trainer(config, None, prepared)
    trainer.train_step().item()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step().item()
        seconds.append(time.perf_counter() - start)
    return seconds
