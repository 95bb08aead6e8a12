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
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tinygpt.config import RunConfig
from tinygpt.data.memmap import BatchSampler, open_loss_mask, open_tokens
from tinygpt.data.prepare import PreparedData
from tinygpt.directories import DirectoryLock
from tinygpt.eval.metrics import perplexity
from tinygpt.model.gpt import GPT
from tinygpt.run.checkpoint import STATE_FILE, save_checkpoint
from tinygpt.run.data import check_loss_mask
from tinygpt.run.directory import lock_run
from tinygpt.run.load import load_weights_into
from tinygpt.run.metrics import METRICS_FILE, MetricsLog
from tinygpt.run.sizing import tokens_per_step
from tinygpt.runtime import Runtime, measure_matmul_peak, seed_everything, setup_runtime
from tinygpt.train import distributed
from tinygpt.train.activation_checkpointing import checkpoint_blocks
from tinygpt.train.cpu_speedups import apply_cpu_speedups, keep_freed_memory_in_process
from tinygpt.train.distributed import SINGLE_PROCESS, DistributedContext
from tinygpt.train.evaluation import evaluate_fixed_batches
from tinygpt.train.observers import TrainingObserver
from tinygpt.train.optim import build_optimizer, set_learning_rate
from tinygpt.train.progress import ThroughputWindow, bar_postfix, progress_bar
from tinygpt.train.schedule import learning_rate_at
from tinygpt.train.state import Progress, capture_train_state, restore_train_state
from tinygpt.train.stopping import StopFlag, stop_requests

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    best_val_loss: float
    stop_reason: str  # "completed", "early_stopping", "interrupted", "stop_at"


class Trainer:
    """Owns the model, optimizer and data of one run. Build it with `start_run`/`resume_run`
    (train/start.py); built with `run_dir=None` it only takes steps (`time_train_steps`).

    `model` is always the plain GPT (what checkpoints hold); under torchrun `wrapped` is its
    DDP or FSDP wrapper, through which training and evaluation run. A caller may pass a `model`
    it built itself (fine-tuning passes one with LoRA layers injected); by default it is a
    fresh GPT of `config.model`. Only parameters with requires_grad are optimized."""

    progress_label = "train"  # the progress bar's name

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path | None,
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
        self.observers: tuple[TrainingObserver, ...] = ()  # set by fit
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
        self.tokens_per_step = tokens_per_step(config)
        self.flops_per_token = self.model.flops_per_token(block)
        # the other ranks never report MFU; measuring would only slow rank 0's measurement
        self.peak_flops = (
            measure_matmul_peak(self.runtime.device_type, self.runtime.dtype)
            if context.is_main
            else math.nan
        )

    # -- state ------------------------------------------------------------------------------

    def train_state(self) -> dict[str, Any]:
        """What train_state.pt holds (train/state.py); under torchrun every rank calls it."""
        return capture_train_state(self)

    def load_train_state(self, state: dict[str, Any], source: Path | str = STATE_FILE) -> None:
        """Continue from a checkpoint's train_state.pt, exactly; `source` names it in errors."""
        restore_train_state(self, state, source)

    def checkpoint_summary(self) -> dict[str, Any]:
        """What meta.json records of the training besides the files: the best val loss so far."""
        best = self.progress.best_val_loss
        return {"val_loss": best if math.isfinite(best) else None}

    def require_run_dir(self) -> Path:
        """The run directory that saving and fitting write into."""
        if self.run_dir is None:
            raise RuntimeError("this Trainer was built without a run directory: it only steps")
        return self.run_dir

    def save(self, is_best: bool = False) -> Path | None:
        """Write a checkpoint. Under torchrun every rank must call this (it gathers RNG states
        and FSDP shards); rank 0 alone writes, and the others return None."""
        summary = self.checkpoint_summary()
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
            self.require_run_dir(), self.progress.step, model, train_state, summary, is_best, keep
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
            x, y = self.to_device(*self.sampler.next_batch())
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

    def to_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.runtime.device_type == "cuda":  # pinned memory lets the copy overlap compute
            return (
                x.pin_memory().to(self.runtime.device, non_blocking=True),
                y.pin_memory().to(self.runtime.device, non_blocking=True),
            )
        return x.to(self.runtime.device), y.to(self.runtime.device)

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Mean loss of each split over fixed batches (train/evaluation.py)."""
        return evaluate_fixed_batches(self)

    def mfu(self, tokens_per_second: float) -> float:
        """Against the peak of all ranks' devices (the measured one times the world size)."""
        peak = self.peak_flops * self.context.world_size
        return self.flops_per_token * tokens_per_second / peak

    # -- the loop -----------------------------------------------------------------------------

    def fit(
        self, stop_at: int | None = None, observers: Sequence[TrainingObserver] = ()
    ) -> TrainResult:
        """Train until max_iters, early stopping, Ctrl-C/SIGTERM (checkpoint saved), or
        `stop_at` steps (used by tests to simulate an interruption). The run stays locked
        against other processes until it returns. `observers` see every metrics record
        (tinygpt.loggers) and are closed at the end, whatever ends it."""
        self.observers = tuple(observers)
        try:
            with self._holding_run_lock():
                return self._fit(stop_at)
        finally:
            for observer in self.observers:
                observer.close()
            self.observers = ()

    @contextlib.contextmanager
    def _holding_run_lock(self) -> Iterator[None]:
        """start_run/resume_run took the lock; a Trainer built directly (fine-tuning) takes it
        here. Released when training ends, so that a later resume in this process or another
        may take it."""
        if self.run_lock is None and self.context.is_main:
            self.run_lock = lock_run(self.require_run_dir())
        try:
            yield
        finally:
            if self.run_lock is not None:
                self.run_lock.release()
                self.run_lock = None

    def _fit(self, stop_at: int | None) -> TrainResult:
        cfg, run_dir = self.config.train, self.require_run_dir()
        metrics = MetricsLog(run_dir / METRICS_FILE, enabled=self.context.is_main)
        reason = "completed"
        bar = progress_bar(
            cfg.max_iters, self.progress.step, self.progress_label, self.context.is_main
        )
        # the step-0 evaluation is inside: a Ctrl-C during it still ends with a checkpoint
        with bar, stop_requests() as stop, logging_redirect_tqdm():
            if self.progress.step == 0:
                self._evaluate_and_save(metrics)
            window = ThroughputWindow(time.perf_counter(), self.progress.step)
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
                    window = ThroughputWindow(time.perf_counter(), step)
                if step % cfg.eval_interval == 0 or step == cfg.max_iters:
                    if self._evaluate_and_save(metrics):
                        reason = "early_stopping"
                        break
                    window = ThroughputWindow(time.perf_counter(), step)
        if reason in ("interrupted", "stop_at"):
            self.save()
            log.info(
                "stopped at step %d; checkpoint saved in %s",
                self.progress.step,
                run_dir / "checkpoints" / "last",
            )
        return TrainResult(run_dir, self.progress.step, self.progress.best_val_loss, reason)

    def _stop_requested(self, stop: StopFlag) -> bool:
        if self.context.is_distributed:  # all ranks stop at the same step, or none does
            return distributed.any_rank(stop.requested)
        return stop.requested

    def _log_train(
        self, metrics: MetricsLog, window: ThroughputWindow, loss: float, bar: tqdm
    ) -> None:
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
        for observer in self.observers:
            observer.on_train(self, record)
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
        record = {
            "kind": "eval",
            "step": progress.step,
            "train_loss": losses["train"],
            "val_loss": losses["val"],
            "val_ppl": perplexity(losses["val"]),
            "tokens_seen": progress.tokens_seen,
            "train_seconds": progress.train_seconds,
        }
        metrics.append(record)
        for observer in self.observers:
            observer.on_eval(self, record)
        log.info(
            "step %d | train %.4f | val %.4f | ppl %.2f%s",
            progress.step,
            losses["train"],
            losses["val"],
            perplexity(losses["val"]),
            " | best" if is_best else "",
        )
        patience = self.config.train.patience
        if patience and progress.evals_since_best >= patience:
            log.info("early stopping: val loss has not improved for %d evaluations", patience)
            return True
        return False


def _loss_masks(config: RunConfig, prepared: PreparedData) -> dict[str, np.ndarray | None]:
    """With loss_on=bot, the per-token masks of dialog data; otherwise every token counts."""
    if config.train.loss_on == "all":
        return {"train": None, "val": None}
    check_loss_mask(config, prepared)
    return {split: open_loss_mask(prepared.mask_path(split)) for split in ("train", "val")}
