from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tinygpt.config import RunConfig
from tinygpt.config_parsing import apply_overrides
from tinygpt.train.loop import Trainer
from tinygpt.train.start import start_run


@pytest.fixture
def tiny_run_config(small_text_file: Path) -> RunConfig:
    """A run that trains in about a second: dropout and gradient accumulation on, so exact resume
    must restore both RNG streams and the accumulation boundary."""
    return apply_overrides(
        RunConfig(),
        {
            "source": str(small_text_file),
            "block_size": 16,
            "n_layer": 2,
            "n_head": 2,
            "n_embd": 32,
            "dropout": 0.1,
            "batch_size": 4,
            "gradient_accumulation_steps": 2,
            "max_iters": 12,
            "warmup_iters": 3,
            "learning_rate": 3e-3,
            "min_lr": 3e-4,
            "eval_interval": 4,
            "eval_iters": 2,
            "log_interval": 2,
        },
    )


@pytest.fixture
def train_eager_and_compiled() -> Callable[[RunConfig, Path], tuple[Trainer, Trainer]]:
    """Train a config eagerly and with torch.compile; assert the weights end up equal."""

    def train(config: RunConfig, out: Path) -> tuple[Trainer, Trainer]:
        eager = start_run(config, out / "eager")
        eager.fit()
        compiled = start_run(apply_overrides(config, {"compile": "true"}), out / "compiled")
        compiled.fit()
        for (name, a), b in zip(
            eager.model.state_dict().items(), compiled.model.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        return eager, compiled

    return train
