"""The data a run trains on: checked against the config before anything is built, and recorded
in run.json so that a resume can tell the same text from another."""

from __future__ import annotations

from typing import Any

from tinygpt.config import RunConfig
from tinygpt.data.memmap import open_tokens
from tinygpt.data.prepare import PreparedData
from tinygpt.errors import ConfigError, DataError
from tinygpt.tokenizers.base import load_tokenizer


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
    check_loss_mask(config, prepared)
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


def check_loss_mask(config: RunConfig, prepared: PreparedData) -> None:
    """loss_on=bot needs the per-token masks that only dialog data has."""
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
