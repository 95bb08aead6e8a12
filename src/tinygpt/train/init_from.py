"""`tinygpt train --init-from SOURCE`: a new run that starts from another's weights.

SOURCE is a tinygpt run (its `best` checkpoint) or a Hugging Face model directory that
`import-hf` reads; the command layer reads it into an `InitSource`. The new run takes the
source's model shape and tokenizer, tokenizes its own text with that tokenizer, and trains
every weight with a fresh optimizer and schedule: full-parameter fine-tuning and continued
pretraining (LoRA is `tinygpt finetune`). Everything else, the recipe, is what `train` would
use without it: defaults < --preset < --config < flags.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinygpt.config import RunConfig
from tinygpt.config_parsing import all_fields
from tinygpt.errors import ConfigError
from tinygpt.model.gpt import GPT
from tinygpt.run.data import check_data_fits, data_info
from tinygpt.run.directory import check_new_run_dir, create_run_dir
from tinygpt.run.sizing import steps_for_epochs
from tinygpt.run.tokenized_text import TOKENIZER_FIELDS, stage_tokenized_text
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.train import distributed
from tinygpt.train.loop import Trainer
from tinygpt.train.start import check_training_fits

log = logging.getLogger(__name__)

# model fields that are not its shape: a new run may set them
SETTABLE_MODEL_FIELDS = ("dropout",)


@dataclass(frozen=True)
class InitSource:
    """The weights a run starts from: `config` gives the model's shape and the data fields
    that name the tokenizer; `identity` is what run.json records of where they came from."""

    path: Path
    config: RunConfig
    model: GPT
    tokenizer: Tokenizer
    identity: dict[str, Any]


def start_run_from(
    source: InitSource, recipe: RunConfig, given: set[str], run_dir: Path
) -> Trainer:
    """Train `recipe` (train's config from defaults, preset, file and flags; `given` names the
    fields a person set) from `source`'s weights, into the new `run_dir`. Shape and tokenizer
    fields given that differ from the source's are refused before anything is written."""
    refuse_shape_and_tokenizer(recipe, given, source)
    if distributed.detect_context(recipe.train).is_distributed:
        raise ConfigError(
            "--init-from starts a run in one process; train it under torchrun afterwards with "
            "`torchrun ... -m tinygpt.cli train --resume RUN_DIR`"
        )
    check_new_run_dir(run_dir)
    config = _with_source_model(recipe, source, given)
    check_training_fits(config)
    staged = stage_tokenized_text(config.data, source.tokenizer, run_dir, source.path)
    check_data_fits(config, staged.prepared)
    config = dataclasses.replace(
        config,
        data=staged.data_config(config.data),
        train=steps_for_epochs(config, staged.prepared.train_tokens),
    )
    run_info = {**data_info(staged.prepared), "init_from": source.identity}
    lock = create_run_dir(run_dir, config.to_json(), source.tokenizer.to_json(), run_info)
    try:
        prepared = staged.move_into_run()
        trainer = Trainer(config, run_dir, prepared, model_state=source.model.state_dict())
    except BaseException:
        lock.release()
        raise
    trainer.run_lock = lock
    log.info("starting from %s: every weight trains, with a fresh optimizer", source.path)
    return trainer


def refuse_shape_and_tokenizer(recipe: RunConfig, given: set[str], source: InitSource) -> None:
    """A run started from weights has their shape and their tokenizer: a field given that
    would change either is refused, naming the flag and the source's value."""
    sections = all_fields()
    for name in sorted(given):
        section = sections[name][0]
        if section == "model" and name not in SETTABLE_MODEL_FIELDS:
            ours, theirs = getattr(recipe.model, name), getattr(source.config.model, name)
            if ours != theirs:
                raise ConfigError(
                    f"--{name} {ours}: a run started from {source.path} keeps its model shape "
                    f"({name} {theirs}); drop the flag, or train a new model without --init-from"
                )
        if name in TOKENIZER_FIELDS:
            ours, theirs = getattr(recipe.data, name), getattr(source.config.data, name)
            if ours != theirs:
                raise ConfigError(
                    f"--{name} {ours}: a run started from {source.path} tokenizes with its "
                    f"tokenizer ({name} {theirs}); drop the flag"
                )


def _with_source_model(recipe: RunConfig, source: InitSource, given: set[str]) -> RunConfig:
    """The recipe with the source's model (the dropout given, if one was) and tokenizer."""
    model = source.config.model
    if "dropout" in given:
        model = dataclasses.replace(model, dropout=recipe.model.dropout)
    tokenizer_fields = {name: getattr(source.config.data, name) for name in TOKENIZER_FIELDS}
    data = dataclasses.replace(recipe.data, **tokenizer_fields)
    return dataclasses.replace(recipe, model=model, data=data)
