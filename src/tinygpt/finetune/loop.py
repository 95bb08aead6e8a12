"""LoRA fine-tuning of a trained run into a new run directory.

A compact loop of its own rather than `train.loop.Trainer`, which builds its GPT from the config
and so cannot take a peft-wrapped one. It reuses the project's parts: `build_optimizer` (AdamW,
here over the LoRA tensors only, the only ones with requires_grad), `learning_rate_at`,
`BatchSampler` and its fixed evaluation batches, `model.loss`, the runtime's autocast, atomic
checkpoints and metrics.jsonl.

The new run is a normal tinygpt run, so `sample`, `chat`, `eval` and export read it unchanged:

    NEW_RUN_DIR/
      run.json  config.json  tokenizer.json (the base run's)  metrics.jsonl
      data/                      the new text, tokenized with the base run's tokenizer
      checkpoints/step-N/        the merged weights W + (alpha / r) B A, at every evaluation
      adapter/                   the best adapter alone: adapter_model.safetensors, adapter.json

Each checkpoint's train_state.pt also holds that step's adapter and its optimizer state, and a
full-model optimizer state, so `tinygpt train --resume NEW_RUN_DIR` continues from the merged
weights as ordinary full training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tinygpt.atomic_files import fsync_directory
from tinygpt.config import RunConfig, TrainConfig, all_fields, apply_overrides, config_from_dict
from tinygpt.data.memmap import BatchSampler, fixed_eval_batches, open_loss_mask, open_tokens
from tinygpt.data.prepare import PreparedData, load_prepared
from tinygpt.errors import CheckpointError, ConfigError, DataError
from tinygpt.finetune.data import prepare_with_tokenizer
from tinygpt.finetune.lora import (
    LoraSettings,
    adapter_state_dict,
    add_lora,
    describe_parameters,
    merged_model,
    merged_model_config,
    resolve_targets,
    save_adapter,
)
from tinygpt.model.gpt import GPT
from tinygpt.runtime import Runtime, seed_everything, setup_runtime
from tinygpt.train.checkpoint import (
    META_FILE,
    MODEL_FILE,
    create_run_dir,
    load_model_from_run,
    read_run_config_dict,
    save_checkpoint,
    sha256_of,
)
from tinygpt.train.loop import EVAL_TOKENS_PER_FORWARD, MetricsLog, Progress, stop_requests
from tinygpt.train.optim import build_optimizer, set_learning_rate
from tinygpt.train.schedule import learning_rate_at

log = logging.getLogger(__name__)

# these decide the token ids, which must stay the base run's
TOKENIZER_FIELDS = ("tokenizer", "tokenizer_vocab_size", "gpt2_bpe_dir", "unknown_chars")
SCHEDULE_LENGTH_FIELDS = ("lr_decay_iters", "restart_iters")  # 0: over the run's max_iters


@dataclass(frozen=True)
class FinetuneResult:
    run_dir: Path
    step: int
    best_val_loss: float
    stop_reason: str  # "completed", "early_stopping", "interrupted"


class Finetuner:
    """Trains the adapters of a peft-wrapped GPT. Build it with `start_finetune`."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        prepared: PreparedData,
        model: GPT,
        settings: LoraSettings,
        adapted: list[str],
        runtime: Runtime,
        base_info: dict[str, Any],
    ) -> None:
        self.config = config  # of the new run: the merged model's shape, the new data
        self.run_dir = run_dir
        self.model = model  # the base GPT with LoRA layers injected; only they train
        self.settings = settings
        self.adapted = adapted
        self.runtime = runtime
        self.base_info = base_info
        train = config.train
        self.optimizer = build_optimizer(model, train, runtime.device_type)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.scaler = torch.amp.GradScaler(runtime.device_type, enabled=runtime.uses_grad_scaler)
        self.train_tokens = open_tokens(prepared.train_path, prepared.dtype)
        self.val_tokens = open_tokens(prepared.val_path, prepared.dtype)
        self.loss_masks = _loss_masks(train, prepared)
        block = config.model.block_size
        self.sampler = BatchSampler(
            self.train_tokens, block, train.batch_size, train.seed, self.loss_masks["train"]
        )
        self.progress = Progress()
        self.tokens_per_step = train.batch_size * block * train.gradient_accumulation_steps

    def parameter_summary(self) -> str:
        """`trainable 12,288 of 812,000 parameters (1.51%): LoRA r=8 on 4 modules`"""
        modules = len(self.adapted)
        return f"{describe_parameters(self.model)}: LoRA r={self.settings.r} on {modules} modules"

    # -- one optimisation step ----------------------------------------------------------------

    def train_step(self) -> Tensor:
        cfg = self.config.train
        self.model.train()
        set_learning_rate(self.optimizer, learning_rate_at(self.progress.step, cfg))
        total = torch.zeros((), device=self.runtime.device)
        for _ in range(cfg.gradient_accumulation_steps):
            x, y = (t.to(self.runtime.device) for t in self.sampler.next_batch())
            with self.runtime.autocast():
                loss = self.model.loss(x, y, cfg.label_smoothing)
            loss = loss / cfg.gradient_accumulation_steps
            self.scaler.scale(loss).backward()
            total += loss.detach()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        self.progress.tokens_seen += self.tokens_per_step
        return total

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean cross-entropy over the same fixed sequences of each split at every evaluation
        (as `Trainer.evaluate`), so successive values differ only because the adapter did."""
        cfg, block = self.config.train, self.config.model.block_size
        sequences = cfg.eval_iters * cfg.batch_size
        rows = min(sequences, max(cfg.batch_size, EVAL_TOKENS_PER_FORWARD // block))
        forwards = math.ceil(sequences / rows)
        self.model.eval()
        losses = {}
        for split, tokens in (("train", self.train_tokens), ("val", self.val_tokens)):
            total = torch.zeros((), device=self.runtime.device)
            mask = self.loss_masks[split]
            for x, y in fixed_eval_batches(tokens, block, rows, forwards, cfg.seed + 1, mask):
                with self.runtime.autocast():
                    total += self.model.loss(x.to(self.runtime.device), y.to(self.runtime.device))
            losses[split] = total.item() / forwards
        return losses

    # -- saving -------------------------------------------------------------------------------

    def save(self, is_best: bool = False) -> Path:
        """The merged model as this step's checkpoint; the adapter alone too when it is the
        best so far, so adapter/ always matches checkpoints/best."""
        merged = merged_model(self.model, self.config.model)
        extra = {"val_loss": _finite_or_none(self.progress.best_val_loss), "lora": True}
        path = save_checkpoint(
            self.run_dir, self.progress.step, merged, self._train_state(merged), extra, is_best
        )
        if is_best:
            info = {**self.base_info, "step": self.progress.step, "val_loss": extra["val_loss"]}
            save_adapter(self.run_dir, self.model, self.settings, self.adapted, info)
        return path

    def _train_state(self, merged: nn.Module) -> dict[str, Any]:
        """The keys `Trainer.load_train_state` reads, with a fresh optimizer for the merged
        model (a resume trains it in full), plus the adapter and its own optimizer state."""
        full_optimizer = build_optimizer(merged, self.config.train, self.runtime.device_type)
        state: dict[str, Any] = {
            "progress": dataclasses.asdict(self.progress),
            "optimizer": full_optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "sampler": self.sampler.get_state(),
            "adapter": adapter_state_dict(self.model),
            "adapter_optimizer": self.optimizer.state_dict(),
        }
        if self.runtime.device_type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.runtime.device)
        return state

    # -- the loop -----------------------------------------------------------------------------

    def fit(self) -> FinetuneResult:
        """Train until max_iters, early stopping, or Ctrl-C/SIGTERM (merged model saved)."""
        cfg = self.config.train
        metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self._evaluate_and_save(metrics)  # step 0: the base model on the new data
        reason = "completed"
        window_start, window_step = time.perf_counter(), 0
        bar = tqdm(
            total=cfg.max_iters,
            desc="finetune",
            unit="step",
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
            leave=False,
        )
        with bar, stop_requests() as stop, logging_redirect_tqdm():
            while self.progress.step < cfg.max_iters:
                if stop.requested:
                    reason = "interrupted"
                    break
                step_start = time.perf_counter()
                loss = self.train_step()
                self.progress.train_seconds += time.perf_counter() - step_start
                bar.update(1)
                step = self.progress.step
                if step % cfg.log_interval == 0 or step == cfg.max_iters:
                    elapsed = time.perf_counter() - window_start
                    rate = (step - window_step) * self.tokens_per_step / elapsed
                    self._log_train(metrics, loss.item(), rate)
                    bar.set_postfix_str(f"loss {loss.item():.4f}")
                    window_start, window_step = time.perf_counter(), step
                if step % cfg.eval_interval == 0 or step == cfg.max_iters:
                    if self._evaluate_and_save(metrics):
                        reason = "early_stopping"
                        break
                    window_start, window_step = time.perf_counter(), step
        if reason == "interrupted":
            self.save()
        return FinetuneResult(self.run_dir, self.progress.step, self.progress.best_val_loss, reason)

    def _log_train(self, metrics: MetricsLog, loss: float, tokens_per_second: float) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        metrics.append(
            {
                "kind": "train",
                "step": self.progress.step,
                "loss": loss,
                "lr": lr,
                "tokens_per_second": tokens_per_second,
            }
        )
        log.info(
            "step %d | loss %.4f | lr %.1e | %.1fk tok/s",
            self.progress.step,
            loss,
            lr,
            tokens_per_second / 1000,
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
        val_ppl = math.exp(min(losses["val"], 50.0))
        metrics.append(
            {
                "kind": "eval",
                "step": progress.step,
                "train_loss": losses["train"],
                "val_loss": losses["val"],
                "val_ppl": val_ppl,
                "tokens_seen": progress.tokens_seen,
                "train_seconds": progress.train_seconds,
            }
        )
        log.info(
            "step %d | train %.4f | val %.4f | ppl %.2f%s",
            progress.step,
            losses["train"],
            losses["val"],
            val_ppl,
            " | best" if is_best else "",
        )
        patience = self.config.train.patience
        return bool(patience) and progress.evals_since_best >= patience


# ----------------------------------------------------------------------------------------------
# Starting


def start_finetune(
    base_run: Path,
    run_dir: Path,
    data_source: str,
    settings: LoraSettings,
    overrides: dict[str, Any] | None = None,
    checkpoint: str = "best",
) -> Finetuner:
    """Load `base_run`'s `checkpoint`, tokenize `data_source` with its tokenizer, create
    `run_dir` and wrap the model with LoRA. `overrides` set data and train fields (max_iters,
    learning_rate, ...) over the base run's; the model shape and the tokenizer stay. The decay
    length (lr_decay_iters, restart_iters) is the fine-tuning run's own unless given: the base
    run's would stretch the schedule over the base run's steps; likewise a given max_iters wins
    over the base run's epochs.

    Mistakes the user can fix (a missing base run, targets that match nothing) fail before any
    data is read or anything is written."""
    overrides = dict(overrides or {})
    _check_overrides(overrides)
    base_config = config_from_dict(read_run_config_dict(base_run))
    given = {key.rpartition(".")[2].replace("-", "_") for key in overrides}
    own_length = {f"train.{name}": 0 for name in SCHEDULE_LENGTH_FIELDS if name not in given}
    if "max_iters" in given and "epochs" not in given:
        own_length["train.epochs"] = 0  # a base run trained for epochs must not outvote it
    config = apply_overrides(base_config, {**own_length, **overrides, "data.source": data_source})
    _check_new_run_dir(run_dir)
    runtime = setup_runtime(config.train)
    model, tokenizer, _ = load_model_from_run(base_run, checkpoint, runtime.device)
    adapted = resolve_targets(model, settings.targets)

    staging = run_dir.with_name(f".{run_dir.name}.data")
    prepared = prepare_with_tokenizer(config.data, tokenizer, staging, base_run)
    is_staged = prepared.directory == staging
    data_dir = run_dir / "data" if is_staged else prepared.directory
    config = dataclasses.replace(
        config,
        model=merged_model_config(config.model, adapted),
        # the prepared tokens, so `tinygpt eval` and `train --resume` find ids of this tokenizer
        data=dataclasses.replace(config.data, source=str(data_dir.resolve())),
        train=_steps_for_epochs(config, prepared.train_tokens),
    )
    _check_split_sizes(prepared, config, data_source)
    base_info = _base_identity(base_run, checkpoint)
    run_info = {
        "source_sha256": prepared.source_sha256,
        "train_tokens": prepared.train_tokens,
        "val_tokens": prepared.val_tokens,
        "token_dtype": prepared.dtype,
        "finetune": {
            "method": "lora",
            "data": data_source,
            "r": settings.r,
            "lora_alpha": settings.alpha,
            "lora_dropout": settings.dropout,
            "target_modules": adapted,
            **base_info,
        },
    }
    tokenizer_json = (base_run / "tokenizer.json").read_text(encoding="utf-8")
    create_run_dir(run_dir, config.to_json(), tokenizer_json, run_info)
    if is_staged:
        os.replace(staging, data_dir)
        fsync_directory(run_dir)
        prepared = load_prepared(data_dir)

    seed_everything(config.train.seed)  # the A matrices start from a seeded draw
    add_lora(model, settings)
    return Finetuner(config, run_dir, prepared, model, settings, adapted, runtime, base_info)


def _check_overrides(overrides: dict[str, Any]) -> None:
    known = all_fields()
    for key in overrides:
        name = key.rpartition(".")[2].replace("-", "_")
        if name in TOKENIZER_FIELDS:
            raise ConfigError(
                f"--{name}: fine-tuning tokenizes with the base run's tokenizer; drop the flag"
            )
        if name in known and known[name][0] == "model":
            raise ConfigError(f"--{name}: LoRA keeps the base run's model shape; drop the flag")


def _check_new_run_dir(run_dir: Path) -> None:
    """Refuse an occupied --out before any work (create_run_dir checks again when writing)."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise CheckpointError(f"{run_dir} exists and is not empty; choose another --out")


def _base_identity(base_run: Path, checkpoint: str) -> dict[str, Any]:
    """What the adapter was trained on top of: run, checkpoint, and the sha256 of its weights
    and tokenizer (load_model_from_run has verified the checkpoint files)."""
    directory = (base_run / "checkpoints" / checkpoint).resolve()
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    return {
        "base_run": str(base_run.resolve()),
        "base_checkpoint": directory.name,
        "base_step": int(meta["step"]),
        "base_model_sha256": meta["files"][MODEL_FILE]["sha256"],
        "base_tokenizer_sha256": sha256_of((base_run / "tokenizer.json").read_bytes()),
    }


def _steps_for_epochs(config: RunConfig, train_tokens: int) -> TrainConfig:
    """With `epochs` set, max_iters reads the new train split that many times (as training)."""
    train = config.train
    if not train.epochs:
        return train
    tokens_per_step = train.batch_size * config.model.block_size * train.gradient_accumulation_steps
    return dataclasses.replace(
        train, max_iters=max(1, math.ceil(train.epochs * train_tokens / tokens_per_step))
    )


def _check_split_sizes(prepared: PreparedData, config: RunConfig, data_source: str) -> None:
    """The checks the sampler would make, made before the new run directory is created."""
    block = config.model.block_size
    for split, count in (("train", prepared.train_tokens), ("val", prepared.val_tokens)):
        if count <= block:
            raise DataError(
                f"{data_source} leaves {count} tokens for {split} but block_size is {block}; "
                "give more text"
            )
    if config.train.loss_on == "bot" and not prepared.has_loss_mask:
        raise ConfigError(
            "loss_on=bot needs dialog data: fine-tune on a dialog source with --format dialog, "
            "or --loss_on all"
        )


def _loss_masks(train: TrainConfig, prepared: PreparedData) -> dict[str, np.ndarray | None]:
    if train.loss_on == "all":
        return {"train": None, "val": None}
    return {split: open_loss_mask(prepared.mask_path(split)) for split in ("train", "val")}


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
