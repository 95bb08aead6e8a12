"""The sizes a run derives from its config and its data, each computed in one place: tokens per
optimizer step, the vocabulary, and the steps that make a number of epochs."""

from __future__ import annotations

import dataclasses
import math

from tinygpt.config import RunConfig, TrainConfig
from tinygpt.errors import ConfigError


def tokens_per_step(config: RunConfig) -> int:
    """Tokens one optimizer step trains on: batch_size x block_size x gradient accumulation
    (under torchrun batch_size is already the global batch)."""
    train = config.train
    return train.batch_size * config.model.block_size * train.gradient_accumulation_steps


def with_vocab_size(config: RunConfig, tokenizer_vocab_size: int) -> RunConfig:
    """The config with the model's vocabulary fitted to the tokenizer's: vocab_size 0 takes the
    tokenizer's size; a larger one is kept (padding, for faster matmuls: GPT-2's 50,257 padded
    to 50,304); a smaller one could not embed every id and is refused."""
    given = config.model.vocab_size
    if 0 < given < tokenizer_vocab_size:
        raise ConfigError(
            f"vocab_size={given} is smaller than the tokenizer's "
            f"{tokenizer_vocab_size}; leave it at 0 or make it larger (padding)"
        )
    model = dataclasses.replace(config.model, vocab_size=max(given, tokenizer_vocab_size))
    return dataclasses.replace(config, model=model)


def steps_for_epochs(config: RunConfig, train_tokens: int) -> TrainConfig:
    """With `epochs` set, max_iters becomes the steps that read the train split that many times
    (the hybrid-attention spec trains "3 epochs"); the result is saved in config.json, so a
    resume keeps it."""
    train = config.train
    if not train.epochs:
        return train
    return dataclasses.replace(
        train, max_iters=max(1, math.ceil(train.epochs * train_tokens / tokens_per_step(config)))
    )
