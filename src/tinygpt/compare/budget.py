"""A comparison's budget, and the optimizer steps that spend it for each config."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from tinygpt.atomic_files import write_text_atomic
from tinygpt.compare.variants import Variant
from tinygpt.config import RunConfig
from tinygpt.data.prepare import PreparedData
from tinygpt.errors import ConfigError
from tinygpt.run.sizing import tokens_per_step
from tinygpt.train.step_time import time_train_steps

log = logging.getLogger(__name__)

EVALUATIONS_PER_RUN = 10  # points on each validation curve
TIMED_STEPS = 5  # train steps timed (after one warm-up step) to turn minutes into steps
STEP_TIMES_FILE = "step_times.json"


@dataclass(frozen=True)
class Budget:
    """Compute per run: `tokens` trained, or `minutes` of training steps (evaluation excluded)."""

    tokens: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.minutes is None):
            raise ConfigError("give exactly one budget: --tokens N or --minutes M")
        if self.tokens is not None and self.tokens <= 0:
            raise ConfigError(f"--tokens {self.tokens} must be greater than 0")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"--minutes {self.minutes} must be greater than 0")

    def describe(self) -> str:
        if self.tokens is not None:
            return f"{self.tokens:,} training tokens per run"
        return f"{self.minutes:g} min of training steps per run (step time measured per config)"


def apply_budget(config: RunConfig, max_iters: int) -> RunConfig:
    """Train for `max_iters` with the whole schedule fitted into it: decay ends at the last
    step, warm-up is at most a tenth, about EVALUATIONS_PER_RUN evaluations, no early stop."""
    train = dataclasses.replace(
        config.train,
        max_iters=max_iters,
        lr_decay_iters=max_iters,
        warmup_iters=min(config.train.warmup_iters, max_iters // 10),
        eval_interval=max(1, math.ceil(max_iters / EVALUATIONS_PER_RUN)),
        patience=0,
        epochs=0.0,  # an epoch count would override max_iters
    )
    return dataclasses.replace(config, train=train)


def steps_for_budget(config: RunConfig, budget: Budget, step_seconds: float | None) -> int:
    """Optimizer steps that spend the budget: ceil(tokens / tokens per step), or
    floor(seconds / measured step time)."""
    if budget.tokens is not None:
        per_step = tokens_per_step(config)
        if budget.tokens < per_step:
            raise ConfigError(
                f"--tokens {budget.tokens:,} is less than one step of this config "
                f"({per_step:,} tokens: batch_size x block_size x gradient_accumulation_steps)"
            )
        return math.ceil(budget.tokens / per_step)
    assert budget.minutes is not None and step_seconds is not None
    steps = math.floor(budget.minutes * 60 / step_seconds)
    if steps < 1:
        raise ConfigError(
            f"--minutes {budget.minutes:g} is less than one step of this config "
            f"({step_seconds:.2f} s); give a larger budget"
        )
    return steps


def measure_step_seconds(config: RunConfig, prepared: PreparedData) -> float:
    """Seconds per optimizer step: the median of TIMED_STEPS steps, so that one step slowed by
    a busy neighbour does not shrink the budget."""
    return statistics.median(time_train_steps(config, prepared, TIMED_STEPS))


def step_seconds_for(variant: Variant, prepared: PreparedData, out: Path) -> float:
    """The measured step time of `variant`, remembered in OUT/step_times.json: measuring again
    would give another max_iters, and the runs already there could no longer be reused. Kept
    per config, so that a refused attempt with a changed config forgets nothing."""
    record_path = out / STEP_TIMES_FILE
    records = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else []
    config = variant.config.to_dict()
    for record in records:
        if record["name"] == variant.name and record["config"] == config:
            log.info("%s: reusing the measured step time, %.4f s", variant.name, record["seconds"])
            return float(record["seconds"])
    seconds = measure_step_seconds(variant.config, prepared)
    log.info("%s: %.4f s per step", variant.name, seconds)
    records.append({"name": variant.name, "config": config, "seconds": seconds})
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record_path, json.dumps(records, indent=1) + "\n")
    return seconds
