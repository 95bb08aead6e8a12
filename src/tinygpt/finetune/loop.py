"""LoRA fine-tuning of a trained run into a new run directory.

`Finetuner` is `train.loop.Trainer` given a peft-wrapped GPT: the same steps, schedule, fixed
evaluation batches, early stopping, Ctrl-C handling and metrics.jsonl, with AdamW over the LoRA
tensors only (the only ones with requires_grad). Its checkpoints hold the merged model.

The new run is a normal tinygpt run, so `sample`, `chat`, `eval` and export read it unchanged:

    NEW_RUN_DIR/
      run.json  config.json  tokenizer.json (the base run's)  metrics.jsonl
      data/                      the new text, tokenized with the base run's tokenizer
      checkpoints/step-N/        the merged weights W + (alpha / r) B A, at every evaluation
      adapter/                   the best adapter alone, in peft's layout (finetune/adapter.py)

Each checkpoint's train_state.pt also holds that step's adapter and its optimizer state, and a
full-model optimizer state, so `tinygpt train --resume NEW_RUN_DIR` continues from the merged
weights as ordinary full training.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from torch import nn

from tinygpt.config import RunConfig, TrainConfig
from tinygpt.config_parsing import (
    all_fields,
    apply_given_settings,
    apply_overrides,
    check_given_settings,
    given_field_names,
)
from tinygpt.data.prepare import PreparedData
from tinygpt.errors import ConfigError
from tinygpt.finetune.adapter import log_module_names, module_names_for, save_adapter
from tinygpt.finetune.lora import (
    LoraSettings,
    adapter_state_dict,
    add_lora,
    describe_adapted,
    describe_parameters,
    merged_model,
    merged_model_config,
    resolve_targets,
)
from tinygpt.model.gpt import GPT
from tinygpt.run.checkpoint import save_checkpoint
from tinygpt.run.data import check_data_fits, data_info
from tinygpt.run.directory import (
    check_new_run_dir,
    create_run_dir,
    read_run_config,
)
from tinygpt.run.load import checkpoint_identity, load_model_from_run
from tinygpt.run.sizing import steps_for_epochs
from tinygpt.run.tokenized_text import TOKENIZER_FIELDS, stage_tokenized_text
from tinygpt.runtime import seed_everything, setup_runtime
from tinygpt.train.loop import Trainer
from tinygpt.train.optim import build_optimizer

log = logging.getLogger(__name__)

SCHEDULE_LENGTH_FIELDS = ("lr_decay_iters", "restart_iters")  # 0: over the run's max_iters
WARMUP_SHARE = 0.1  # the most of a fine-tuning run's steps its default warm-up takes


class Finetuner(Trainer):
    """Trains the adapters of a peft-wrapped GPT. Build it with `start_finetune`.

    The Trainer's loop (steps, evaluation on fixed batches, early stopping, Ctrl-C, metrics)
    over a model whose only trainable tensors are the LoRA ones; what differs is what a
    checkpoint holds (see `save`)."""

    progress_label = "finetune"

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        prepared: PreparedData,
        model: GPT,
        settings: LoraSettings,
        adapted: list[str],
        base_info: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.adapted = adapted
        self.base_info = base_info
        self.module_names = module_names_for(config.model)  # the exported model's, if any
        log_module_names(self.module_names)
        # config: of the new run (the merged model's shape, the new data)
        super().__init__(config, run_dir, prepared, model=model)
        # a frozen matmul weight needs no gradient of its own: 4 FLOPs per weight and token
        # (forward, and the gradient of its input), not the 6 that flops_per_token counts
        frozen = sum(
            m.weight.numel()
            for m in model.modules()
            if isinstance(m, nn.Linear) and not m.weight.requires_grad
        )
        self.flops_per_token -= 2.0 * frozen

    def parameter_summary(self) -> str:
        """`trainable 12,288 of 812,000 parameters (1.51%): LoRA r=8 on 4 modules:
        blocks.{0,1}.attn.qkv, blocks.{0,1}.attn.proj`: every adapted module, so a target that
        matched more than was meant shows."""
        return f"{describe_parameters(self.model)}: {describe_adapted(self.settings, self.adapted)}"

    def save(self, is_best: bool = False) -> Path:
        """The merged model as this step's checkpoint; the adapter alone too when it is the
        best so far, so adapter/ always matches checkpoints/best."""
        run_dir, step = self.require_run_dir(), self.progress.step
        merged = merged_model(self.model, self.config.model)
        summary = {**self.checkpoint_summary(), "lora": True}
        train_state = self._merged_train_state(merged)
        keep = self.config.train.keep_checkpoints
        path = save_checkpoint(run_dir, step, merged, train_state, summary, is_best, keep)
        if is_best:
            info = {**self.base_info, "step": step, "val_loss": summary["val_loss"]}
            save_adapter(run_dir, self.model, self.settings, self.adapted, self.module_names, info)
        return path

    def _merged_train_state(self, merged: nn.Module) -> dict[str, Any]:
        """The Trainer's state with a fresh optimizer for the merged model (`tinygpt train
        --resume` trains it in full), plus the adapter and the adapter's optimizer state."""
        state = self.train_state()
        state["adapter_optimizer"] = state["optimizer"]
        state["adapter"] = adapter_state_dict(self.model)
        full_optimizer = build_optimizer(merged, self.config.train, self.runtime.device_type)
        state["optimizer"] = full_optimizer.state_dict()
        return state


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
    over the base run's epochs, and the warm-up is fitted to this run (`fit_warmup`).

    Mistakes the user can fix (a missing base run, targets that match nothing) fail before any
    data is read or anything is written."""
    overrides = dict(overrides or {})
    _check_overrides(overrides)
    base_config = read_run_config(base_run)
    given = given_field_names(overrides)
    own_length = {f"train.{name}": 0 for name in SCHEDULE_LENGTH_FIELDS if name not in given}
    # as `train` takes flags over a preset: a given max_iters also drops the base run's epochs
    config = apply_given_settings(
        apply_overrides(base_config, {**own_length, "data.source": data_source}),
        overrides,
        "the flags",
    )
    check_new_run_dir(run_dir)  # before any work; create_run_dir checks again when writing
    runtime = setup_runtime(config.train)
    model, tokenizer, _ = load_model_from_run(base_run, checkpoint, runtime.device)
    adapted = resolve_targets(model, settings.targets)

    staged = stage_tokenized_text(config.data, tokenizer, run_dir, base_run)
    prepared = staged.prepared
    check_data_fits(config, prepared)  # before data.source names the run's copy
    config = dataclasses.replace(
        config,
        model=merged_model_config(config.model, adapted),
        data=staged.data_config(config.data),
        train=steps_for_epochs(config, prepared.train_tokens),
    )
    if "warmup_iters" not in given:
        config = dataclasses.replace(config, train=fit_warmup(config.train))
    if config.train.optimizer != "adamw":  # a base run trained with Muon: its adapters do not
        log.info("optimizer: adamw for the LoRA adapters (the base run trained with %s)",
                 config.train.optimizer)  # fmt: skip
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, optimizer="adamw")
        )
    check_given_settings(config, given)
    base_info = checkpoint_identity(base_run, checkpoint, "base_")
    run_info = {
        **data_info(prepared),
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
    # written afresh, as start_run does: an older gpt2 base run names a folder of merges
    tokenizer_json = tokenizer.to_json()
    create_run_dir(run_dir, config.to_json(), tokenizer_json, run_info)
    prepared = staged.move_into_run()

    seed_everything(config.train.seed)  # the A matrices start from a seeded draw
    add_lora(model, settings)
    return Finetuner(config, run_dir, prepared, model, settings, adapted, base_info)


def fit_warmup(train: TrainConfig) -> TrainConfig:
    """The base run's warm-up, cut to a tenth of this run's steps: the base run's 100 warm-up
    steps over a 50-step fine-tune would end it before the learning rate ever reached its peak.
    An explicit --warmup_iters is kept as given."""
    warmup = min(train.warmup_iters, int(WARMUP_SHARE * train.max_iters))
    if warmup != train.warmup_iters:
        log.info(
            "warm-up: %d steps (the base run's %d, cut to a tenth of max_iters %d; "
            "--warmup_iters sets it)",
            warmup, train.warmup_iters, train.max_iters,
        )  # fmt: skip
    return dataclasses.replace(train, warmup_iters=warmup)


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
        if name == "optimizer" and str(overrides[key]) != "adamw":
            raise ConfigError(
                f"--optimizer {overrides[key]}: LoRA adapters train with AdamW (Muon "
                "orthogonalises whole hidden matrices, not rank-r factors); drop the flag"
            )
