"""What the benchmark scripts share: flag parsing, quiet logging, the machine's name."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from tinygpt.config import ModelConfig
from tinygpt.model.gpt import GPT
from tinygpt.presets import baby_shakespeare, tinystories_small


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
