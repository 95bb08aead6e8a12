"""What a checkpoint's train_state.pt holds besides the weights, so that a resumed run continues
bit for bit: the run's counters, the optimizer and grad-scaler states, and every RNG stream
(torch's global generator for dropout, the batch sampler's own, each rank's under torchrun)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tinygpt.errors import CheckpointError
from tinygpt.run.checkpoint import STATE_FILE
from tinygpt.train import distributed

if TYPE_CHECKING:
    from tinygpt.train.loop import Trainer


@dataclass
class Progress:
    """The counters of a run that a checkpoint must carry besides weights and RNGs."""

    step: int = 0
    tokens_seen: int = 0
    best_val_loss: float = math.inf
    evals_since_best: int = 0
    train_seconds: float = 0.0


def capture_train_state(trainer: Trainer) -> dict[str, Any]:
    """The trainer's state as train_state.pt stores it. Under torchrun every rank must call
    this: it gathers each rank's RNG state and, under FSDP, the optimizer's shards."""
    state: dict[str, Any] = {
        "progress": dataclasses.asdict(trainer.progress),
        "optimizer": trainer.optimizer.state_dict(),
        "grad_scaler": trainer.scaler.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "sampler": trainer.sampler.get_state(),
    }
    runtime, context = trainer.runtime, trainer.context
    if runtime.device_type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(runtime.device)
    if context.is_distributed:  # every rank's dropout stream; rank 0's is rng_torch
        state["rng_torch_ranks"] = distributed.gather_objects(torch.get_rng_state())
        if runtime.device_type == "cuda":
            rng_cuda = torch.cuda.get_rng_state(runtime.device)
            state["rng_cuda_ranks"] = distributed.gather_objects(rng_cuda)
        if context.mode == "fsdp":  # shards -> the single-process layout
            state["optimizer"] = distributed.gather_full(state["optimizer"], context.is_main)
    return state


def restore_train_state(
    trainer: Trainer, state: dict[str, Any], source: Path | str = STATE_FILE
) -> None:
    """Restore what `capture_train_state` saved. A state of another structure (tampered with,
    or another program's) is one CheckpointError naming `source`, not a KeyError."""
    if not state:
        raise CheckpointError(
            f"{source} holds no training state (the run was imported, not trained); "
            "fine-tune it with `tinygpt finetune` instead of resuming it"
        )
    try:
        _apply_train_state(trainer, state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"{source} does not hold a tinygpt training state ({type(err).__name__}: "
            f"{detail}); restore the run's own file"
        ) from None


def _apply_train_state(trainer: Trainer, state: dict[str, Any]) -> None:
    runtime, context = trainer.runtime, trainer.context
    trainer.progress = _progress_from(state["progress"])
    if context.is_distributed and context.mode == "fsdp":
        distributed.shard_optimizer_state(trainer.optimizer, state["optimizer"])
    else:
        trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scaler.load_state_dict(state["grad_scaler"])
    torch.set_rng_state(state["rng_torch"])
    trainer.sampler.set_state(state["sampler"])
    if "rng_cuda" in state and runtime.device_type == "cuda":
        torch.cuda.set_rng_state(state["rng_cuda"], runtime.device)
    if context.is_distributed:
        _load_rank_rng_states(trainer, state)


def _load_rank_rng_states(trainer: Trainer, state: dict[str, Any]) -> None:
    """Each rank's own dropout stream back, when the checkpoint has one per rank; otherwise
    (another number of ranks) a fresh stream per rank."""
    rank, world_size = trainer.context.rank, trainer.context.world_size
    saved = state.get("rng_torch_ranks")
    if saved is not None and len(saved) == world_size:
        torch.set_rng_state(saved[rank])
        saved_cuda = state.get("rng_cuda_ranks")
        if saved_cuda is not None and trainer.runtime.device_type == "cuda":
            torch.cuda.set_rng_state(saved_cuda[rank], trainer.runtime.device)
    else:
        seed = trainer.config.train.seed
        torch.manual_seed(distributed.seed_for_rank(seed, rank, trainer.progress.step))


def _progress_from(document: Any) -> Progress:
    """The counters of a train_state.pt, every one a number of the right kind."""
    if not isinstance(document, dict):
        raise TypeError(f"progress is a {type(document).__name__}, not a dict")
    progress = Progress(**document)
    for field in dataclasses.fields(Progress):
        value = getattr(progress, field.name)
        kinds = (int,) if field.type in ("int", int) else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
            raise ValueError(f"progress.{field.name} is {value!r}")
    return progress
