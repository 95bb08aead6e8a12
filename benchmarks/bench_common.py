"""What the benchmark scripts share: flag parsing, quiet logging, the machine's description,
the matmul peak."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from tinygpt.compare.runner import whole_split_loss
from tinygpt.config import ModelConfig
from tinygpt.model.gpt import GPT
from tinygpt.presets import baby_shakespeare, tinystories_small
from tinygpt.runtime import (
    EMULATED_BF16_SLOWDOWN,
    cpu_features,
    describe_cpu,
    matmul_flops_by_size,
)
from tinygpt.train.loop import Trainer


def split_choices(
    parser: argparse.ArgumentParser, flag: str, text: str, choices: list[str]
) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    for value in values:
        if value not in choices:
            parser.error(f"{flag}: {value!r} is not one of {', '.join(choices)}")
    return values


def quiet_logging() -> None:
    """The library logs progress at INFO; a benchmark's output is the report alone."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("tinygpt").setLevel(logging.WARNING)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_line() -> str:
    """The CPU a figure was measured on: model, cores, vector instructions and bf16 support.
    Printed in every benchmark's header and beside its tables: the same command measures a
    different machine on another kind of CPU (bf16 runs about 100x slower without bf16
    instructions)."""
    return f"{cpu_model()} ({os.cpu_count()} CPUs; {describe_cpu()})"


def machine_line(threads: int | None = None) -> str:
    """A benchmark's first line: the CPU, torch, Python and the threads the figures used."""
    return (
        f"machine: {cpu_line()}, torch {torch.__version__}, python "
        f"{platform.python_version()}, {threads or torch.get_num_threads()} threads"
    )


def emulated_bf16_reason() -> str | None:
    """Why bf16 figures from this CPU would mislead (None where it computes bf16 natively)."""
    if cpu_features().native_bf16:
        return None
    return f"this CPU has no bf16 instructions: bf16 matmuls run {EMULATED_BF16_SLOWDOWN}"


def matmul_peak_by_size(
    device_type: str, dtype: torch.dtype, repeats: int = 10
) -> dict[int, float]:
    """tinygpt's own peak measurement with more repeats, a longer spin-up and a larger time
    budget per matmul than training uses (up to size 2048 on a CPU running 150+ GFLOP/s);
    still seconds, not minutes, for bf16 on a CPU without bf16 instructions."""
    return matmul_flops_by_size(
        device_type, dtype, repeats=repeats, spin_seconds=1.0, max_matmul_seconds=0.5
    )


def decoding_model(name: str, block_size: int) -> GPT:
    """A random-weight model of a generation benchmark's architecture (`DECODING_MODELS`), in
    eval mode without dropout; speed does not depend on what was learned."""
    torch.manual_seed(0)
    config = dataclasses.replace(DECODING_MODELS[name](), block_size=block_size, dropout=0.0)
    return GPT(config).eval()


DECODING_MODELS: dict[str, Callable[[], ModelConfig]] = {
    "baby-shakespeare": lambda: dataclasses.replace(baby_shakespeare().model, vocab_size=65),
    "tinystories-small": lambda: tinystories_small().model,  # vocab 50304 set by the preset
}


def whole_val_loss(trainer: Trainer) -> float:
    """The trainer's model scored on every token of its validation split, as `compare`'s final
    val loss is (the Bot-reply loss where the run trains on those alone)."""
    block, mask = trainer.config.model.block_size, trainer.loss_masks["val"]
    return whole_split_loss(
        trainer.model, trainer.val_tokens, block, mask, trainer.runtime.device
    ).trained_loss
