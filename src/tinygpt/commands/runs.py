"""RUN_DIR, --checkpoint and --device: the flags that name a trained run, and the one place the
commands load what they name."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the handlers import torch-heavy modules only when they run
    import torch

    from tinygpt.config import RunConfig
    from tinygpt.model.gpt import GPT
    from tinygpt.tokenizers.base import Tokenizer


class LoadedRun(NamedTuple):
    model: GPT
    tokenizer: Tokenizer
    config: RunConfig
    device: torch.device


def add_run_flags(
    parser: argparse.ArgumentParser, device: bool = True, run_help: str | None = None
) -> None:
    """RUN_DIR and which of its checkpoints to load (and onto which device)."""
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=run_help)
    parser.add_argument("--checkpoint", default="best", help="best, last, or a step-N folder")
    if device:
        parser.add_argument("--device", default="auto")


def load_run(args: argparse.Namespace) -> LoadedRun:
    """RUN_DIR's --checkpoint on --device (its shape checked against free memory first)."""
    from tinygpt.run.load import load_model_from_run
    from tinygpt.runtime import resolve_device

    device = resolve_device(args.device)
    model, tokenizer, config = load_model_from_run(args.run_dir, args.checkpoint, device)
    return LoadedRun(model, tokenizer, config, device)
