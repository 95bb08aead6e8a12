from pathlib import Path

import pytest

from tinygpt.config import RunConfig, apply_overrides


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
