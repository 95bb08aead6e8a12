"""The training loop: steps, evaluation, early stopping, checkpoints, exact resume.

Exact resume: everything random draws from RNGs whose state is in the checkpoint (torch's global
generator for dropout, the batch sampler's own generator) and evaluation uses fixed batches from
a separate generator, so evaluating or saving never shifts the training stream. A run stopped at
step k and resumed reaches step n with bitwise the same parameters as an uninterrupted run.

Under torchrun the same loop runs on every rank, with the model wrapped in DDP or FSDP; what that
changes (global batch size, who writes, resuming on another number of ranks) is described in
`tinygpt.train.distributed`. A single process takes none of those paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tinygpt.atomic_files import write_text_atomic
from tinygpt.config import RunConfig, TrainConfig, apply_overrides, config_from_dict
from tinygpt.data.memmap import BatchSampler, fixed_eval_batches, open_loss_mask, open_tokens
from tinygpt.data.prepare import PreparedData, prepare_dataset, with_prepared_settings
from tinygpt.directories import DirectoryLock, read_regular_file
from tinygpt.errors import CheckpointError, ConfigError, DataError
from tinygpt.model.gpt import GPT
from tinygpt.model.loss import IGNORE_INDEX
from tinygpt.runtime import (
    TRAINING_BYTES_PER_ELEMENT,
    Runtime,
    check_model_fits,
    measure_matmul_peak,
    resolve_device,
    seed_everything,
    setup_runtime,
)
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.train import distributed
from tinygpt.train.activation_checkpointing import checkpoint_blocks
from tinygpt.train.checkpoint import (
    STATE_FILE,
    Checkpoint,
    check_config_matches_weights,
    check_new_run_dir,
    create_run_dir,
    describe_write_failure,
    has_checkpoint,
    load_checkpoint,
    load_weights_into,
    lock_run,
    read_run_config_dict,
    read_run_info,
    remove_run_leftovers,
    run_file,
    run_tokenizer_path,
    save_checkpoint,
)
from tinygpt.train.cpu_speedups import apply_cpu_speedups, keep_freed_memory_in_process
from tinygpt.train.distributed import SINGLE_PROCESS, DistributedContext
from tinygpt.train.optim import build_optimizer, set_learning_rate
from tinygpt.train.schedule import learning_rate_at

log = logging.getLogger(__name__)

# the progress bar in 80 columns, with room for its bar at 99,999 steps and 99 hours: no steps/s
# (tok/s says it) and a short postfix (`bar_postfix`); MFU is in the log lines and metrics.jsonl
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"

EVAL_TOKENS_PER_FORWARD = 8192  # tokens per evaluation forward pass, at least one batch
MAX_METRICS_BYTES = 1 << 30  # metrics.jsonl: about 200 bytes a line, millions of lines


@dataclass
class Progress:
    """The counters of a run that a checkpoint must carry besides weights and RNGs."""

    step: int = 0
    tokens_seen: int = 0
    best_val_loss: float = math.inf
    evals_since_best: int = 0
    train_seconds: float = 0.0


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    best_val_loss: float
    stop_reason: str  # "completed", "early_stopping", "interrupted", "stop_at"


class Trainer:
    """Owns the model, optimizer and data of one run. Build it with `start_run`/`resume_run`.

    `model` is always the plain GPT (what checkpoints hold); under torchrun `wrapped` is its
    DDP or FSDP wrapper, through which training and evaluation run. A caller may pass a `model`
    it built itself (fine-tuning passes one with LoRA layers injected); by default it is a
    fresh GPT of `config.model`. Only parameters with requires_grad are optimized."""

    progress_label = "train"  # the progress bar's name

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        prepared: PreparedData,
        context: DistributedContext = SINGLE_PROCESS,
        model_state: dict[str, Tensor] | None = None,
        model: GPT | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.context = context
        # held from start_run/resume_run to the end of fit (rank 0 alone under torchrun)
        self.run_lock: DirectoryLock | None = None
        self.runtime: Runtime = distributed.on_local_device(
            setup_runtime(config.train, config.model), context
        )
        seed_everything(config.train.seed)
        self.model = model if model is not None else GPT(config.model)
        if model_state is not None:  # before FSDP turns the parameters into shards
            load_weights_into(self.model, model_state)
        if config.train.gradient_checkpointing:
            checkpoint_blocks(self.model)
        if self.runtime.device_type == "cpu":
            keep_freed_memory_in_process()
            apply_cpu_speedups(self.model)
        self.wrapped: torch.nn.Module | None = None
        if not context.is_distributed:
            self.model.to(self.runtime.device)
            # training and evaluation go through model.loss (adaptive softmax never builds
            # (B, T, V))
            self.compute_loss = (
                torch.compile(self.model.loss) if config.train.compile else self.model.loss
            )
        else:
            if context.mode == "ddp":
                self.model.to(self.runtime.device)
            self.wrapped = distributed.wrap_model(self.model, context, self.runtime)
            self.compute_loss = (
                torch.compile(self.wrapped) if config.train.compile else self.wrapped
            )
            torch.manual_seed(distributed.seed_for_rank(config.train.seed, context.rank))
        self.optimizer = build_optimizer(self.model, config.train, self.runtime.device_type)
        self.scaler = distributed.grad_scaler(context, self.runtime)
        self.train_tokens = open_tokens(prepared.train_path, prepared.dtype)
        self.val_tokens = open_tokens(prepared.val_path, prepared.dtype)
        self.loss_masks = _loss_masks(config, prepared)
        block, batch = config.model.block_size, config.train.batch_size
        self.sampler = BatchSampler(
            self.train_tokens,
            block,
            batch,
            config.train.seed,
            self.loss_masks["train"],
            context.rank,
            context.world_size,
        )
        self.progress = Progress()
        self.tokens_per_step = batch * block * config.train.gradient_accumulation_steps
        self.flops_per_token = self.model.flops_per_token(block)
        # the other ranks never report MFU; measuring would only slow rank 0's measurement
        self.peak_flops = (
            measure_matmul_peak(self.runtime.device_type, self.runtime.dtype)
            if context.is_main
            else math.nan
        )

    # -- state ------------------------------------------------------------------------------

    def train_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "progress": dataclasses.asdict(self.progress),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "sampler": self.sampler.get_state(),
        }
        if self.runtime.device_type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.runtime.device)
        if self.context.is_distributed:  # every rank's dropout stream; rank 0's is rng_torch
            state["rng_torch_ranks"] = distributed.gather_objects(torch.get_rng_state())
            if self.runtime.device_type == "cuda":
                rng_cuda = torch.cuda.get_rng_state(self.runtime.device)
                state["rng_cuda_ranks"] = distributed.gather_objects(rng_cuda)
            if self.context.mode == "fsdp":  # shards -> the single-process layout
                state["optimizer"] = distributed.gather_full(
                    state["optimizer"], self.context.is_main
                )
        return state

    def load_train_state(self, state: dict[str, Any], source: Path | str = STATE_FILE) -> None:
        """Restore what `train_state` saved. A state of another structure (tampered with, or
        another program's) is one CheckpointError naming `source`, not a KeyError."""
        if not state:
            raise CheckpointError(
                f"{source} holds no training state (the run was imported, not trained); "
                "fine-tune it with `tinygpt finetune` instead of resuming it"
            )
        try:
            self._apply_train_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise CheckpointError(
                f"{source} does not hold a tinygpt training state ({type(err).__name__}: "
                f"{detail}); restore the run's own file"
            ) from None

    def _apply_train_state(self, state: dict[str, Any]) -> None:
        self.progress = _progress_from(state["progress"])
        if self.context.is_distributed and self.context.mode == "fsdp":
            distributed.shard_optimizer_state(self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["grad_scaler"])
        torch.set_rng_state(state["rng_torch"])
        self.sampler.set_state(state["sampler"])
        if "rng_cuda" in state and self.runtime.device_type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.runtime.device)
        if self.context.is_distributed:
            self._load_rank_rng_states(state)

    def _load_rank_rng_states(self, state: dict[str, Any]) -> None:
        """Each rank's own dropout stream back, when the checkpoint has one per rank; otherwise
        (another number of ranks) a fresh stream per rank."""
        rank, world_size = self.context.rank, self.context.world_size
        saved = state.get("rng_torch_ranks")
        if saved is not None and len(saved) == world_size:
            torch.set_rng_state(saved[rank])
            saved_cuda = state.get("rng_cuda_ranks")
            if saved_cuda is not None and self.runtime.device_type == "cuda":
                torch.cuda.set_rng_state(saved_cuda[rank], self.runtime.device)
        else:
            seed = self.config.train.seed
            torch.manual_seed(distributed.seed_for_rank(seed, rank, self.progress.step))

    def checkpoint_extra(self) -> dict[str, Any]:
        """What meta.json records besides the files: the best val loss so far."""
        return {"val_loss": _finite_or_none(self.progress.best_val_loss)}

    def save(self, is_best: bool = False) -> Path | None:
        """Write a checkpoint. Under torchrun every rank must call this (it gathers RNG states
        and FSDP shards); rank 0 alone writes, and the others return None."""
        extra = self.checkpoint_extra()
        train_state = self.train_state()
        model: torch.nn.Module = self.model
        if self.context.is_distributed and self.context.mode == "fsdp":
            # keep_vars: the tied weight is one Parameter under two names, gathered once
            full = distributed.gather_full(
                self.model.state_dict(keep_vars=True), self.context.is_main
            )
            model = distributed.StateDictView(full)
        if not self.context.is_main:
            return None
        keep = self.config.train.keep_checkpoints
        return save_checkpoint(
            self.run_dir, self.progress.step, model, train_state, extra, is_best, keep
        )

    # -- one optimisation step ----------------------------------------------------------------

    def train_step(self) -> Tensor:
        """One optimizer step over `gradient_accumulation_steps` micro-batches; returns the mean
        loss as a tensor (not `.item()`, which would wait for the GPU every step)."""
        cfg = self.config.train
        (self.wrapped or self.model).train()
        set_learning_rate(self.optimizer, learning_rate_at(self.progress.step, cfg))
        total = torch.zeros((), device=self.runtime.device)
        for micro_step in range(cfg.gradient_accumulation_steps):
            x, y = self._to_device(*self.sampler.next_batch())
            is_last = micro_step == cfg.gradient_accumulation_steps - 1
            with distributed.gradient_sync(self.wrapped, enabled=is_last):
                with self.runtime.autocast():
                    loss = self.compute_loss(x, y, cfg.label_smoothing)
                loss = loss / cfg.gradient_accumulation_steps
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        self.progress.tokens_seen += self.tokens_per_step
        return total

    def _to_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.runtime.device_type == "cuda":  # pinned memory lets the copy overlap compute
            return (
                x.pin_memory().to(self.runtime.device, non_blocking=True),
                y.pin_memory().to(self.runtime.device, non_blocking=True),
            )
        return x.to(self.runtime.device), y.to(self.runtime.device)

    # -- evaluation ---------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean cross-entropy (no label smoothing) over eval_iters x batch_size sequences of
        each split: the same fixed sequences at every evaluation, so successive values differ
        only because the model changed. Small models are evaluated in larger batches
        (EVAL_TOKENS_PER_FORWARD), which changes nothing but the speed."""
        cfg, block = self.config.train, self.config.model.block_size
        sequences = cfg.eval_iters * cfg.batch_size
        rows = min(sequences, max(cfg.batch_size, EVAL_TOKENS_PER_FORWARD // block))
        forwards = math.ceil(sequences / rows)
        if self.context.is_distributed:
            return self._evaluate_across_ranks(rows, forwards)
        self.model.eval()
        losses = {}
        for split, tokens in (("train", self.train_tokens), ("val", self.val_tokens)):
            total = torch.zeros((), device=self.runtime.device)
            mask = self.loss_masks[split]
            for x, y in fixed_eval_batches(tokens, block, rows, forwards, cfg.seed + 1, mask):
                x, y = self._to_device(x, y)
                with self.runtime.autocast():
                    total += self.compute_loss(x, y)
            losses[split] = total.item() / forwards
        return losses

    def _evaluate_across_ranks(self, rows: int, forwards: int) -> dict[str, float]:
        """`evaluate` with each forward's rows split across the ranks: the same sequences and
        the same per-forward mean as one process (up to rounding), whatever the number of
        ranks. Every rank runs every forward (FSDP gathers parameters collectively); a rank
        left without rows reruns one row and counts it zero times."""
        cfg, block = self.config.train, self.config.model.block_size
        rank, world_size = self.context.rank, self.context.world_size
        self.wrapped.eval()  # type: ignore[union-attr]
        # (split, forward, [sum of token losses, tokens])
        sums = torch.zeros(2, forwards, 2, device=self.runtime.device)
        splits = (("train", self.train_tokens), ("val", self.val_tokens))
        for index, (split, tokens) in enumerate(splits):
            mask = self.loss_masks[split]
            batches = fixed_eval_batches(tokens, block, rows, forwards, cfg.seed + 1, mask)
            for forward, (x_all, y_all) in enumerate(batches):
                x, y = x_all.tensor_split(world_size)[rank], y_all.tensor_split(world_size)[rank]
                weight = 1.0
                if len(x) == 0:
                    x, y, weight = x_all[:1], y_all[:1], 0.0
                x, y = self._to_device(x, y)
                tokens_counted = (y != IGNORE_INDEX).sum() * weight
                with self.runtime.autocast():
                    loss = self.compute_loss(x, y)
                sums[index, forward, 0] = loss.float() * tokens_counted
                sums[index, forward, 1] = tokens_counted
        distributed.sum_then_share(sums)
        means = (sums[..., 0] / sums[..., 1].clamp(min=1)).mean(dim=1).tolist()  # (split,)
        return dict(zip(("train", "val"), means, strict=True))

    def mfu(self, tokens_per_second: float) -> float:
        """Against the peak of all ranks' devices (the measured one times the world size)."""
        peak = self.peak_flops * self.context.world_size
        return self.flops_per_token * tokens_per_second / peak

    # -- the loop -----------------------------------------------------------------------------

    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train until max_iters, early stopping, Ctrl-C/SIGTERM (checkpoint saved), or
        `stop_at` steps (used by tests to simulate an interruption). The run stays locked
        against other processes until it returns."""
        with self._holding_run_lock():
            return self._fit(stop_at)

    @contextlib.contextmanager
    def _holding_run_lock(self) -> Iterator[None]:
        """start_run/resume_run took the lock; a Trainer built directly (fine-tuning) takes it
        here. Released when training ends, so that a later resume in this process or another
        may take it."""
        if self.run_lock is None and self.context.is_main:
            self.run_lock = lock_run(self.run_dir)
        try:
            yield
        finally:
            if self.run_lock is not None:
                self.run_lock.release()
                self.run_lock = None

    def _fit(self, stop_at: int | None) -> TrainResult:
        cfg = self.config.train
        metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.context.is_main)
        reason = "completed"
        bar = tqdm(
            total=cfg.max_iters,
            initial=self.progress.step,
            desc=self.progress_label,
            unit="step",
            disable=not sys.stderr.isatty() or not self.context.is_main,
            dynamic_ncols=True,
            leave=False,
            bar_format=BAR_FORMAT,
        )
        # the step-0 evaluation is inside: a Ctrl-C during it still ends with a checkpoint
        with bar, stop_requests() as stop, logging_redirect_tqdm():
            if self.progress.step == 0:
                self._evaluate_and_save(metrics)
            window = _Window(time.perf_counter(), self.progress.step)
            while self.progress.step < cfg.max_iters:
                if self._stop_requested(stop):
                    reason = "interrupted"
                    break
                if stop_at is not None and self.progress.step >= stop_at:
                    reason = "stop_at"
                    break
                step_start = time.perf_counter()
                loss = self.train_step()
                self.progress.train_seconds += time.perf_counter() - step_start
                bar.update(1)
                step = self.progress.step
                if step % cfg.log_interval == 0 or step == cfg.max_iters:
                    if self.context.is_distributed:
                        loss = distributed.mean_across_ranks(loss)
                    self._log_train(metrics, window, loss.item(), bar)
                    window = _Window(time.perf_counter(), step)
                if step % cfg.eval_interval == 0 or step == cfg.max_iters:
                    if self._evaluate_and_save(metrics):
                        reason = "early_stopping"
                        break
                    window = _Window(time.perf_counter(), step)
        if reason in ("interrupted", "stop_at"):
            self.save()
            log.info(
                "stopped at step %d; checkpoint saved in %s",
                self.progress.step,
                self.run_dir / "checkpoints" / "last",
            )
        return TrainResult(self.run_dir, self.progress.step, self.progress.best_val_loss, reason)

    def _stop_requested(self, stop: _StopFlag) -> bool:
        if self.context.is_distributed:  # all ranks stop at the same step, or none does
            return distributed.any_rank(stop.requested)
        return stop.requested

    def _log_train(self, metrics: MetricsLog, window: _Window, loss: float, bar: tqdm) -> None:
        elapsed = time.perf_counter() - window.start
        tokens_per_second = (self.progress.step - window.step) * self.tokens_per_step / elapsed
        record = {
            "kind": "train",
            "step": self.progress.step,
            "loss": loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens_per_second": tokens_per_second,
            "mfu": self.mfu(tokens_per_second),
            "ms_per_step": 1000 * elapsed / max(1, self.progress.step - window.step),
        }
        metrics.append(record)
        bar.set_postfix_str(bar_postfix(loss, tokens_per_second))
        if bar.disable:
            log.info(
                "step %d | loss %.4f | lr %.1e | %.1fk tok/s | MFU %.0f%%",
                self.progress.step,
                loss,
                record["lr"],
                tokens_per_second / 1000,
                100 * record["mfu"],
            )

    def _evaluate_and_save(self, metrics: MetricsLog) -> bool:
        """Evaluate, checkpoint, and return True when early stopping says to stop."""
        losses = self.evaluate()
        progress = self.progress
        is_best = losses["val"] < progress.best_val_loss
        if is_best:
            progress.best_val_loss = losses["val"]
            progress.evals_since_best = 0
        else:
            progress.evals_since_best += 1
        self.save(is_best=is_best)
        metrics.append(
            {
                "kind": "eval",
                "step": progress.step,
                "train_loss": losses["train"],
                "val_loss": losses["val"],
                "val_ppl": math.exp(min(losses["val"], 50.0)),
                "tokens_seen": progress.tokens_seen,
                "train_seconds": progress.train_seconds,
            }
        )
        log.info(
            "step %d | train %.4f | val %.4f | ppl %.2f%s",
            progress.step,
            losses["train"],
            losses["val"],
            math.exp(min(losses["val"], 50.0)),
            " | best" if is_best else "",
        )
        patience = self.config.train.patience
        if patience and progress.evals_since_best >= patience:
            log.info("early stopping: val loss has not improved for %d evaluations", patience)
            return True
        return False


@dataclass(frozen=True)
class _Window:
    """Start of a throughput measurement window (evaluation time is excluded)."""

    start: float
    step: int


class MetricsLog:
    """metrics.jsonl: one JSON object a line, appended and flushed as training goes."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled  # False on every rank but rank 0

    def append(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:  # a full disk: name the file, and what is safe
            err.filename = err.filename or str(self.path)
            raise CheckpointError(describe_write_failure(self.path.parent, err)) from None

    def truncate_after(self, step: int) -> None:
        """Forget lines written after the checkpoint a resumed run restarts from."""
        if not self.path.exists():
            return
        kept = [json.dumps(record) for record in _records(self.path) if record["step"] <= step]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return _records(run_dir / "metrics.jsonl")


def _records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (JSON objects with a whole-number step), without the
    torn last line a kill mid-append leaves. Refused, like every file of a run, if it is a
    link out of the run or not a regular file."""
    if not path.exists() and not path.is_symlink():
        return []
    what = f"{path} is unreadable"
    data = read_regular_file(
        run_file(path.parent, path.name), MAX_METRICS_BYTES, what, CheckpointError
    )
    records = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict) and type(record.get("step")) is int:
                records.append(record)
    return records


@contextlib.contextmanager
def stop_requests() -> Iterator[_StopFlag]:
    """Turn the first Ctrl-C (or SIGTERM) into a request to stop at the next step boundary, so
    the checkpoint never captures a half-applied optimizer step; a second Ctrl-C interrupts at
    once."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum: int, frame: object) -> None:
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = True
        log.info("stopping after this step; Ctrl-C again to abort without saving")

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class _StopFlag:
    requested: bool = False


def bar_postfix(loss: float, tokens_per_second: float) -> str:
    return f"loss {loss:.3f}, {tokens_per_second / 1000:.1f}k tok/s"


def raise_interrupt_on_sigterm() -> None:
    """From now on SIGTERM raises KeyboardInterrupt, as Ctrl-C does, until training's own
    handler (`stop_requests`) takes over: a `kill` while the data is prepared or the model is
    built unwinds (locks released, half-written files removed, exit 130) instead of ending the
    process mid-write. For the command line, whose process is the run's."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------------------------
# Starting and resuming runs


def start_run(config: RunConfig, run_dir: Path) -> Trainer:
    """Prepare the data, fix the vocabulary size, check every setting against the data, build
    the trainer, and only then create the run directory: a mistake found on the way leaves
    nothing behind. Under torchrun, join the process group first; rank 0 alone creates the run
    directory."""
    check_new_run_dir(run_dir)
    check_training_fits(config)
    config = with_prepared_settings(config)  # a prepared directory brings its own tokenizer
    context = distributed.setup_distributed(config.train)
    prepared = distributed.run_leader_first(context, lambda: prepare_dataset(config.data))
    if 0 < config.model.vocab_size < prepared.vocab_size:
        raise ConfigError(
            f"vocab_size={config.model.vocab_size} is smaller than the tokenizer's "
            f"{prepared.vocab_size}; leave it at 0 or make it larger (padding)"
        )
    vocab_size = max(config.model.vocab_size, prepared.vocab_size)
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, vocab_size=vocab_size),
        train=steps_for_epochs(config, prepared.train_tokens),
    )
    check_data_fits(config, prepared)
    # written afresh, not copied: data prepared before GPT-2's merges were kept in tokenizer.json
    # names a folder of them, and the run must hold them itself
    tokenizer_json = load_tokenizer(prepared.tokenizer_path).to_json()
    trainer = Trainer(config, run_dir, prepared, context)
    trainer.run_lock = distributed.run_on_main(
        context,
        lambda: create_run_dir(run_dir, config.to_json(), tokenizer_json, data_info(prepared)),
    )
    return trainer


def resume_run(run_dir: Path, overrides: dict[str, Any] | None = None) -> Trainer:
    """Rebuild the trainer of `run_dir` at its last checkpoint; a run stopped before its first
    checkpoint starts again from step 0. Training fields may change (a larger max_iters), and
    so may dropout and the data's path (to the same text); the model shape and the data may
    not. Everything is checked before anything in the run changes."""
    info = read_run_info(run_dir)
    saved = config_from_dict(read_run_config_dict(run_dir))
    config = apply_overrides(saved, overrides or {})
    _check_resumable_changes(run_dir, saved, config)
    # config.json may have been edited to an absurd shape
    check_training_fits(config, fix=f"is {run_dir / 'config.json'} the run's own?")
    context = distributed.setup_distributed(config.train)
    lock = distributed.run_on_main(context, lambda: _lock_and_tidy(run_dir))
    try:
        trainer = _rebuild_trainer(run_dir, info, saved, config, context)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    trainer.run_lock = lock
    return trainer


def check_training_fits(config: RunConfig, fix: str = "make it smaller") -> None:
    """Refuse a model too big to train here before data is prepared or a directory made.
    Under torchrun, FSDP spreads weights, gradients and optimizer state over the ranks."""
    context = distributed.detect_context(config.train)
    shards = context.world_size if context.mode == "fsdp" else 1
    device = resolve_device(config.train.device)
    check_model_fits(config.model, device, TRAINING_BYTES_PER_ELEMENT / shards, fix)


def _lock_and_tidy(run_dir: Path) -> DirectoryLock:
    """Lock the run, then delete what killed or failed writes left (a `.tmp-step-*` after a
    full disk holds the very space the resumed run needs)."""
    lock = lock_run(run_dir)
    remove_run_leftovers(run_dir)
    return lock


def _rebuild_trainer(
    run_dir: Path,
    info: dict[str, Any],
    saved: RunConfig,
    config: RunConfig,
    context: DistributedContext,
) -> Trainer:
    prepared = distributed.run_leader_first(context, lambda: prepare_dataset(config.data))
    if prepared.source_sha256 != info.get("source_sha256"):
        moved = config.data.source != saved.data.source
        raise CheckpointError(
            f"{config.data.source} is not the text {run_dir} was trained on "
            f"({saved.data.source}): its sha256 differs; resume with that text or start a new run"
            if moved
            else f"the data source {config.data.source} changed since {run_dir} started "
            "(its sha256 differs); resume with the original text or start a new run"
        )
    _check_same_split(run_dir, info, prepared)
    if (
        load_tokenizer(run_tokenizer_path(run_dir)).to_dict()
        != load_tokenizer(prepared.tokenizer_path).to_dict()
    ):
        raise CheckpointError(f"the tokenizer of {run_dir} differs from the prepared data's")
    check_data_fits(config, prepared)
    checkpoint = load_checkpoint(run_dir, "last") if has_checkpoint(run_dir) else None
    if checkpoint is not None:
        check_config_matches_weights(config.model, checkpoint.model_state, run_dir)
        _check_max_iters(run_dir, config, checkpoint.step)
    distributed.barrier()  # every rank has read config.json and the checkpoint: rank 0 may write
    model_state = checkpoint.model_state if checkpoint is not None else None
    trainer = Trainer(config, run_dir, prepared, context, model_state)
    if checkpoint is not None:
        _restore(trainer, checkpoint)
    else:
        log.info("%s has no checkpoint yet; starting it again from step 0", run_dir)
    if context.is_main:
        if config != saved:
            write_text_atomic(run_dir / "config.json", config.to_json())
        # without a checkpoint every line is of the attempt that is being redone
        kept_step = trainer.progress.step if checkpoint is not None else -1
        MetricsLog(run_dir / "metrics.jsonl").truncate_after(kept_step)
    log.info("resumed %s at step %d", run_dir, trainer.progress.step)
    return trainer


def _check_same_split(run_dir: Path, info: dict[str, Any], prepared: PreparedData) -> None:
    """The same text must also split the same way: a newer tinygpt may cut it otherwise
    (prepared data of format 3 sent a few big files whole to one side), and a resumed run
    would then train on what it validated on."""
    recorded = (info.get("train_tokens"), info.get("val_tokens"))
    now = (prepared.train_tokens, prepared.val_tokens)
    if None not in recorded and recorded != now:
        raise CheckpointError(
            f"the text of {run_dir} now splits into {now[0]:,} train and {now[1]:,} validation "
            f"tokens, not the {recorded[0]:,} and {recorded[1]:,} it was trained on; start a new "
            "run with --out"
        )


def _restore(trainer: Trainer, checkpoint: Checkpoint) -> None:
    assert checkpoint.train_state is not None
    source = checkpoint.directory / STATE_FILE
    trainer.load_train_state(checkpoint.train_state, source)
    if trainer.progress.step != checkpoint.step:
        raise CheckpointError(
            f"{source} is at step {trainer.progress.step} but its meta.json says "
            f"{checkpoint.step}; the checkpoint was tampered with: restore it"
        )


# data fields a resume may change: where the text is (its content is checked), and how many
# processes tokenize it
RESUMABLE_DATA_FIELDS = ("source", "workers")
# model fields that are not its shape: the weights load whatever they are (nanoGPT lets a
# resume change dropout too)
RESUMABLE_MODEL_FIELDS = ("dropout",)


def _check_resumable_changes(run_dir: Path, saved: RunConfig, config: RunConfig) -> None:
    """Refuse a change of the model shape or of the data, naming each changed field."""
    kept_model = _with_fields_of(saved.model, config.model, RESUMABLE_MODEL_FIELDS)
    if config.model != kept_model:
        raise CheckpointError(
            f"cannot resume {run_dir} with a different model shape "
            f"({_describe_changes(kept_model, config.model)}); start a new run with --out"
        )
    kept_data = _with_fields_of(saved.data, config.data, RESUMABLE_DATA_FIELDS)
    if config.data != kept_data:
        raise CheckpointError(
            f"cannot resume {run_dir} with different data settings "
            f"({_describe_changes(kept_data, config.data)}); drop those flags, or start a new "
            "run with --out"
        )


def _with_fields_of(saved: Any, given: Any, names: tuple[str, ...]) -> Any:
    """`saved` with the fields `names` taken from `given`."""
    return dataclasses.replace(saved, **{name: getattr(given, name) for name in names})


def _check_max_iters(run_dir: Path, config: RunConfig, step: int) -> None:
    """Resuming below the current step would silently do nothing."""
    if config.train.max_iters < step:
        raise ConfigError(
            f"max_iters={config.train.max_iters} is below step {step}, where {run_dir} stopped; "
            f"give a --max_iters above {step} to train further"
        )


def check_data_fits(config: RunConfig, prepared: PreparedData) -> None:
    """Every check the data can fail, made right after it is prepared: before the model is
    built or the run directory created (a block_size longer than the validation split once
    failed only at the first evaluation, after minutes of work). The token files are read
    once for their largest id: a meta.json that lies, or ids past the vocabulary, are one line
    here instead of an IndexError mid-training."""
    block = config.model.block_size
    for split, count in (("train", prepared.train_tokens), ("val", prepared.val_tokens)):
        if count <= block:
            raise DataError(
                f"the {split} split of {config.data.source} has {count:,} tokens but "
                f"block_size is {block:,} (a sequence needs block_size + 1 tokens); use "
                f"--block_size {count - 1} or less, or more text"
            )
    _check_loss_mask(config, prepared)
    tokenizer_size = load_tokenizer(prepared.tokenizer_path).vocab_size
    if tokenizer_size != prepared.vocab_size:
        raise DataError(
            f"{prepared.directory / 'meta.json'} says vocab_size {prepared.vocab_size} but its "
            f"tokenizer.json has {tokenizer_size} tokens; prepare the data again"
        )
    vocab_size = config.model.vocab_size
    for path in (prepared.train_path, prepared.val_path):
        highest = int(open_tokens(path, prepared.dtype).max())
        if highest >= vocab_size:
            raise DataError(
                f"{path} holds token id {highest:,} but the vocabulary has {vocab_size:,} ids "
                f"(0 to {vocab_size - 1:,}); the token file does not match its tokenizer: "
                "prepare the data again"
            )


def steps_for_epochs(config: RunConfig, train_tokens: int) -> TrainConfig:
    """With `epochs` set, max_iters becomes the steps that read the train split that many times
    (seed 000 trains "3 epochs"); the result is saved in config.json, so a resume keeps it."""
    train = config.train
    if not train.epochs:
        return train
    tokens_per_step = train.batch_size * config.model.block_size * train.gradient_accumulation_steps
    return dataclasses.replace(
        train, max_iters=max(1, math.ceil(train.epochs * train_tokens / tokens_per_step))
    )


def _loss_masks(config: RunConfig, prepared: PreparedData) -> dict[str, np.ndarray | None]:
    """With loss_on=bot, the per-token masks of dialog data; otherwise every token counts."""
    if config.train.loss_on == "all":
        return {"train": None, "val": None}
    _check_loss_mask(config, prepared)
    return {split: open_loss_mask(prepared.mask_path(split)) for split in ("train", "val")}


def _check_loss_mask(config: RunConfig, prepared: PreparedData) -> None:
    if config.train.loss_on == "bot" and not prepared.has_loss_mask:
        raise ConfigError(
            "loss_on=bot needs dialog data: use --format dialog with a dialog source "
            "(DailyDialog, ProSocial Dialog), or --loss_on all"
        )


def data_info(prepared: PreparedData) -> dict[str, Any]:
    """What run.json records of the data a run trains on."""
    return {
        "source_sha256": prepared.source_sha256,
        "train_tokens": prepared.train_tokens,
        "val_tokens": prepared.val_tokens,
        "token_dtype": prepared.dtype,
    }


def _describe_changes(before: object, after: object) -> str:
    changes = [
        f"{f.name} {getattr(before, f.name)} -> {getattr(after, f.name)}"
        for f in dataclasses.fields(before)  # type: ignore[arg-type]
        if getattr(before, f.name) != getattr(after, f.name)
    ]
    return ", ".join(changes)
