"""Tiny runs with random weights, written straight into run directories (no training needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tinygpt.config import DataConfig, ModelConfig, RunConfig
from tinygpt.model.gpt import GPT
from tinygpt.run.checkpoint import save_checkpoint
from tinygpt.run.directory import create_run_dir
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.tokenizers.char import CharTokenizer

SAMPLE_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll: Speak, speak!"
TINY = {"block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32, "dropout": 0.0}

MakeRun = Callable[..., tuple[Path, GPT, Tokenizer]]


def random_gpt(config: ModelConfig, seed: int = 0) -> GPT:
    """A GPT whose every weight (norm gains and biases included) is perturbed away from its
    init, so a swapped or dropped tensor shows in the logits."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


@pytest.fixture
def sample_text() -> str:
    return SAMPLE_TEXT


@pytest.fixture
def char_tokenizer() -> CharTokenizer:
    return CharTokenizer.train(SAMPLE_TEXT)


@pytest.fixture
def make_run(tmp_path: Path, char_tokenizer: CharTokenizer) -> MakeRun:
    """make_run(name, tokenizer=None, vocab_padding=3, **model_fields) -> (run_dir, model,
    tokenizer): a run directory whose `best` and `last` checkpoint is a random tiny GPT."""

    def make(
        name: str, tokenizer: Tokenizer | None = None, vocab_padding: int = 3, **fields: object
    ) -> tuple[Path, GPT, Tokenizer]:
        tokenizer = tokenizer or char_tokenizer
        model_config = ModelConfig(
            vocab_size=tokenizer.vocab_size + vocab_padding, **{**TINY, **fields}
        )
        config = RunConfig(
            model=model_config, data=DataConfig(source="unused", tokenizer=tokenizer.kind)
        )
        model = random_gpt(model_config)
        run_dir = tmp_path / name
        tokenizer_json = json.dumps(tokenizer.to_dict(), ensure_ascii=False)
        create_run_dir(run_dir, config.to_json(), tokenizer_json, {})
        save_checkpoint(run_dir, 1, model, {}, {}, is_best=True)
        return run_dir, model, tokenizer

    return make
