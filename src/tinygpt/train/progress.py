"""What a training run shows while it goes: the progress bar, and its throughput windows."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tqdm import tqdm

# the progress bar in 80 columns, with room for its bar at 99,999 steps and 99 hours: no steps/s
# (tok/s says it) and a short postfix (`bar_postfix`); MFU is in the log lines and metrics.jsonl
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def progress_bar(total: int, initial: int, label: str, is_main: bool) -> tqdm:
    """The run's bar on stderr: off when stderr is not a terminal (the log lines say it all
    then) and on every rank but rank 0."""
    return tqdm(
        total=total,
        initial=initial,
        desc=label,
        unit="step",
        disable=not sys.stderr.isatty() or not is_main,
        dynamic_ncols=True,
        leave=False,
        bar_format=BAR_FORMAT,
    )


def bar_postfix(loss: float, tokens_per_second: float) -> str:
    return f"loss {loss:.3f}, {tokens_per_second / 1000:.1f}k tok/s"


@dataclass(frozen=True)
class ThroughputWindow:
    """Start of a throughput measurement window (evaluation time is excluded)."""

    start: float
    step: int
