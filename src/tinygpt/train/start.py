"""Starting and resuming runs: every setting checked against the data and the run before
anything is written, then the trainer built.

A new run prepares its data, fixes the vocabulary size, checks every setting, builds the trainer
and only then creates its directory, so a mistake found on the way leaves nothing behind. A
resumed run may change its training fields (a larger max_iters), dropout and the data's path (to
the same text), never the model's shape or the data itself.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from tinygpt.atomic_files import write_text_atomic
from tinygpt.config import RunConfig
from tinygpt.config_parsing import apply_overrides
from tinygpt.data.prepare import PreparedData, prepare_dataset, with_prepared_settings
from tinygpt.directories import DirectoryLock
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.run.checkpoint import STATE_FILE, Checkpoint, has_checkpoint
from tinygpt.run.data import check_data_fits, data_info
from tinygpt.run.directory import (
    CONFIG_FILE,
    check_new_run_dir,
    create_run_dir,
    describe_changes,
    lock_run,
    read_run_config,
    read_run_info,
    remove_run_leftovers,
    run_tokenizer_path,
)
from tinygpt.run.load import check_config_matches_weights, load_checkpoint
from tinygpt.run.metrics import METRICS_FILE, MetricsLog
from tinygpt.run.sizing import steps_for_epochs, with_vocab_size
from tinygpt.runtime import TRAINING_BYTES_PER_ELEMENT, check_model_fits, resolve_device
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.train import distributed
from tinygpt.train.distributed import DistributedContext
from tinygpt.train.loop import Trainer

log = logging.getLogger(__name__)


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
    config = with_vocab_size(config, prepared.vocab_size)
    config = dataclasses.replace(config, train=steps_for_epochs(config, prepared.train_tokens))
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
    saved = read_run_config(run_dir)
    config = apply_overrides(saved, overrides or {})
    _check_resumable_changes(run_dir, saved, config)
    # config.json may have been edited to an absurd shape
    check_training_fits(config, fix=f"is {run_dir / CONFIG_FILE} the run's own?")
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
    """Lock the run, then delete what killed or failed writes left (a half-written step folder
    after a full disk holds the very space the resumed run needs)."""
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
            write_text_atomic(run_dir / CONFIG_FILE, config.to_json())
        # without a checkpoint every line is of the attempt that is being redone
        kept_step = trainer.progress.step if checkpoint is not None else -1
        MetricsLog(run_dir / METRICS_FILE).truncate_after(kept_step)
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
            f"({describe_changes(kept_model, config.model)}); start a new run with --out"
        )
    kept_data = _with_fields_of(saved.data, config.data, RESUMABLE_DATA_FIELDS)
    if config.data != kept_data:
        raise CheckpointError(
            f"cannot resume {run_dir} with different data settings "
            f"({describe_changes(kept_data, config.data)}); drop those flags, or start a new "
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
