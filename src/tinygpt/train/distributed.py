"""Training on several devices or machines: DDP, or FSDP, under `torchrun`.

Launch one process per device; torchrun sets RANK, WORLD_SIZE and LOCAL_RANK, and every process
runs the same command::

    # one machine, 2 GPUs (add --device cpu for 2 CPU processes, which talk over gloo)
    torchrun --standalone --nproc_per_node 2 -m tinygpt.cli train --preset gptiny --out RUN
    # resume, on the same or another number of processes (or with plain `tinygpt train`)
    torchrun --standalone --nproc_per_node 4 -m tinygpt.cli train --resume RUN
    # 2 machines with G GPUs each: run on both, with R = 0 on HOST and R = 1 on the other
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \\
        --nproc_per_node G -m tinygpt.cli train --preset gptiny --out RUN
    # shard parameters, gradients and optimizer state instead of replicating them
    torchrun --standalone --nproc_per_node 2 -m tinygpt.cli train ... --distributed fsdp

What changes with N ranks, and what does not:

- `batch_size` is the global micro-batch: each rank computes `batch_size / N` of its rows (a
  batch size that N does not divide is refused) and gradients are averaged across ranks, so
  the hyperparameters, the tokens per step and the learning-rate schedule do not depend on N.
  `gradient_accumulation_steps` is not divided by N either.
- The batch sampler draws all `batch_size` offsets from one generator seeded by `seed` on every
  rank and each rank reads its own slice (`data.memmap.BatchSampler`): 2 ranks of b rows see
  exactly the rows 1 rank of 2b sees, no two ranks the same ones.
- Dropout draws from torch's generator, seeded per rank (`seed_for_rank`) so that ranks draw
  different masks; the checkpoint keeps every rank's generator.
- Only rank 0 writes the run directory, checkpoints, metrics and log lines. Evaluation splits
  each fixed evaluation batch across the ranks, sums the losses and token counts across ranks
  and broadcasts rank 0's result, so every rank takes the same early-stopping decision.
- A checkpoint holds the plain `GPT` state dict (no `module.` prefixes, FSDP shards gathered)
  and the optimizer state in the plain `torch.optim` layout: it is the checkpoint a
  single-process run writes, and `sample`, `eval` and `export` read it as one.
- Resume with another number of ranks continues the same run: the same weights and optimizer
  state, the same global batches (the sampler's state does not depend on N) and the same
  schedule. Only the dropout masks differ (ranks beyond those saved get a fresh stream from
  (seed, rank, step)) and the float rounding of the gradient average. With the same number of
  ranks, every rank gets its own generator back.
- `--distributed fsdp` shards with FSDP2 (`torch.distributed.fsdp.fully_shard`), one unit per
  transformer block plus the rest of the model; it runs on CUDA (nccl) and on CPU (gloo). The
  model is built whole in host memory and each unit moves to the device as it is sharded, so a
  device holds only its shards. A checkpoint gathers the full weights and optimizer state one
  tensor at a time into rank 0's host memory, and rank 0 writes them.
- `--device cuda` (or `auto`) puts rank r on `cuda:LOCAL_RANK`; with several machines the run
  directory (and the data cache, or the prepared data) must be on a filesystem every machine
  sees, since resuming reads the checkpoint on every rank.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tinygpt.config import TrainConfig
from tinygpt.errors import ConfigError, TinyGPTError
from tinygpt.model.gpt import GPT
from tinygpt.runtime import Runtime, resolve_device

log = logging.getLogger(__name__)

Result = TypeVar("Result")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the processes torchrun started (1 of 1 without it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mode: str = "ddp"  # "ddp" or "fsdp" (TrainConfig.distributed)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistributedContext()
_control_group: dist.ProcessGroup | None = None  # gloo: CPU-side flags and objects


def detect_context(train: TrainConfig) -> DistributedContext:
    """Read torchrun's environment. A world size of 1 (or no torchrun) is a plain run."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers; launch with torchrun"
        ) from None
    if world_size <= 1:
        return SINGLE_PROCESS
    return DistributedContext(rank, world_size, local_rank, train.distributed)


def setup_distributed(train: TrainConfig) -> DistributedContext:
    """Check the run can be split across torchrun's processes, then join the process group
    (nccl on CUDA, gloo on CPU). Every check comes before the group exists, so a mistake is one
    line from every rank instead of a hang."""
    context = detect_context(train)
    if not context.is_distributed:
        return context
    if train.batch_size % context.world_size:
        raise ConfigError(
            f"batch_size={train.batch_size} is the global batch and does not divide across "
            f"{context.world_size} ranks; use a multiple of {context.world_size}"
        )
    device_type = resolve_device(train.device).type
    if device_type not in ("cpu", "cuda"):
        raise ConfigError(
            f"training on several processes needs CUDA or the CPU, not {device_type}; "
            "use --device cuda or --device cpu"
        )
    if device_type == "cuda" and context.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK={context.local_rank} but this machine has "
            f"{torch.cuda.device_count()} GPUs; lower --nproc_per_node"
        )
    global _control_group
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(context.local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", context.local_rank))
        else:
            dist.init_process_group("gloo")
        atexit.register(_leave_process_group)
        _control_group = dist.new_group(backend="gloo") if device_type == "cuda" else None
    if not context.is_main:  # rank 0 tells the story; the others only warn
        logging.getLogger("tinygpt").setLevel(logging.WARNING)
    return context


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def on_local_device(runtime: Runtime, context: DistributedContext) -> Runtime:
    """Rank r of a machine trains on cuda:LOCAL_RANK whatever index --device named."""
    if context.is_distributed and runtime.device_type == "cuda":
        return Runtime(torch.device("cuda", context.local_rank), runtime.dtype)
    return runtime


def seed_for_rank(seed: int, rank: int, step: int = 0) -> int:
    """A seed for rank `rank`'s dropout stream, independent of the other ranks' streams."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------------------------
# Wrapping the model


class LossModule(nn.Module):
    """`GPT.loss` as a module's forward: DDP and FSDP act in `forward` (gradient hooks,
    gathering shards), and training calls `loss`, not `forward`."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
        return self.model.loss(idx, targets, label_smoothing)


def wrap_model(model: GPT, context: DistributedContext, runtime: Runtime) -> nn.Module:
    """DDP: the model (on `runtime.device`) replicated, gradients averaged in backward.
    FSDP: each block, then the rest, sharded across the ranks (moved to the device as they are
    sharded); the GPT's parameters become DTensor shards, so build the optimizer after this."""
    wrapper = LossModule(model)
    if context.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(wrapper)  # embeddings, final norm and head, gathered around the blocks
        return wrapper
    device_ids = [runtime.device.index] if runtime.device_type == "cuda" else None
    return DistributedDataParallel(
        wrapper,
        device_ids=device_ids,
        forward_sync_buffers=False,  # RoPE tables are constants: no broadcast every forward
        # an adaptive softmax's tail clusters go unused in a batch without their tokens
        find_unused_parameters=model.config.output == "adaptive",
    )


def gradient_sync(wrapped: nn.Module | None, enabled: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP) on all but the last
    micro-batch of an accumulated step: the gradients add up locally until then."""
    if wrapped is None or enabled:
        return contextlib.nullcontext()
    if isinstance(wrapped, DistributedDataParallel):
        return wrapped.no_sync()
    return _fsdp_no_sync(wrapped)


@contextlib.contextmanager
def _fsdp_no_sync(wrapped: nn.Module) -> Iterator[None]:
    wrapped.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        wrapped.set_requires_gradient_sync(True)  # type: ignore[operator]


def grad_scaler(context: DistributedContext, runtime: Runtime) -> torch.amp.GradScaler:
    """fp16's loss scaler; under FSDP each rank sees only its gradient shards, so the
    inf/NaN check must be agreed across ranks (ShardedGradScaler does)."""
    if context.is_distributed and context.mode == "fsdp":
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(runtime.device_type, enabled=runtime.uses_grad_scaler)
    return torch.amp.GradScaler(runtime.device_type, enabled=runtime.uses_grad_scaler)


# ----------------------------------------------------------------------------------------------
# Talking across ranks


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier(group=_control_group)


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on one (a Ctrl-C or SIGTERM seen by one rank stops
    them all at the same step; stopping apart would leave the others waiting forever)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_control_group)
    return bool(value.item())


def sum_then_share(values: Tensor) -> Tensor:
    """Sum `values` across ranks, then give every rank rank 0's bits of the sum."""
    if dist.is_initialized():
        dist.all_reduce(values)
        dist.broadcast(values, src=0)
    return values


def mean_across_ranks(value: Tensor) -> Tensor:
    if not dist.is_initialized():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value, group=_control_group)
    return gathered


def run_on_main(context: DistributedContext, function: Callable[[], Result]) -> Result | None:
    """`function()` on rank 0 alone (creating the run directory); a TinyGPTError it raises is
    raised on every rank, so they all stop with the same one-line message."""
    if not context.is_distributed:
        return function()
    result, error = None, None
    if context.is_main:
        try:
            result = function()
        except TinyGPTError as err:
            error = err
    _share_error(error)
    return result


def run_leader_first(context: DistributedContext, function: Callable[[], Result]) -> Result:
    """`function()` on each machine's local rank 0, then on the machine's other ranks: data
    preparation fills the cache once, and the others find it there."""
    if not context.is_distributed:
        return function()
    result, error = None, None
    if context.local_rank == 0:
        try:
            result = function()
        except TinyGPTError as err:
            error = err
    _share_error(error)
    if context.local_rank != 0:
        result = function()
    return result  # type: ignore[return-value]


def _share_error(error: TinyGPTError | None) -> None:
    errors = [e for e in gather_objects(error) if e is not None]
    if errors:
        raise errors[0]


# ----------------------------------------------------------------------------------------------
# Checkpoints of a sharded model


def is_sharded(tensor: object) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def gather_full(value: Any, keep: bool, cache: dict[int, Tensor] | None = None) -> Any:
    """`value` with every DTensor (an FSDP shard) replaced by the whole tensor on the CPU, a
    collective that every rank must call in the same order. Only a rank with `keep` (the one
    that writes) holds the results; the others get empty placeholders, so host memory holds
    one full copy, not one per rank. Tensors seen twice (tied weights) are gathered once and
    stay one tensor, so safetensors stores them once."""
    cache = {} if cache is None else cache
    if isinstance(value, dict):
        return {key: gather_full(item, keep, cache) for key, item in value.items()}
    if isinstance(value, list):
        return [gather_full(item, keep, cache) for item in value]
    if is_sharded(value):
        if id(value) not in cache:
            with torch.no_grad():
                full = value.full_tensor()  # type: ignore[union-attr]
                cache[id(value)] = full.cpu() if keep else full.new_empty(0, device="cpu")
        return cache[id(value)]
    return value


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a plain (single-process layout) optimizer state into an optimizer of FSDP shards:
    each rank keeps the slice of every moment tensor that matches its parameter shard."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in state["state"].items():
        param = params[index]
        if not is_sharded(param):
            continue
        for key, value in values.items():
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape == param.shape:
                values[key] = distribute_tensor(
                    value.to(param.device),
                    param.device_mesh,
                    param.placements,
                    src_data_rank=None,  # every rank read the checkpoint: slice, don't send
                )
    optimizer.load_state_dict(state)


class StateDictView(nn.Module):
    """An nn.Module whose state dict is the given tensors: what `save_checkpoint` takes."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        super().__init__()
        self.tensors = tensors

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        return dict(self.tensors)
