import dataclasses

import numpy as np
import pytest
import torch

from tinygpt.config import SEED_LIMIT, ModelConfig, SampleConfig, TrainConfig
from tinygpt.config_parsing import field_help
from tinygpt.errors import ConfigError
from tinygpt.model.gpt import GPT


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"tie_weights": False, "bias": False},
        {"position": "rope", "norm": "rmsnorm", "ffn": "swiglu", "n_kv_head": 1},
        {"attention": "hybrid", "ffn": "geglu"},
        {"output": "adaptive", "tie_weights": False, "vocab_size": 64},
    ],
)
def test_tensor_elements_is_a_close_lower_bound_of_what_the_model_allocates(changes):
    config = ModelConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=64)
    config = dataclasses.replace(config, **changes)
    with torch.device("meta"):  # shapes only
        model = GPT(config)
    allocated = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    assert 0.9 * allocated <= config.tensor_elements() <= allocated


@pytest.mark.parametrize("seed", [-1, SEED_LIMIT, 2**64, 10**30])
def test_a_seed_torch_cannot_take_is_refused(seed):
    with pytest.raises(ConfigError, match=f"seed={seed} must be a whole number from 0"):
        TrainConfig(seed=seed)
    with pytest.raises(ConfigError, match=f"sample_seed={seed}"):
        SampleConfig(sample_seed=seed)


def test_the_largest_seed_and_the_evaluation_seed_derived_from_it_work():
    """Evaluation batches draw from seed + 1 (train/loop.py): from the largest seed too."""
    from tinygpt.data.memmap import fixed_eval_batches

    seed = TrainConfig(seed=SEED_LIMIT - 1).seed
    tokens = np.arange(100, dtype=np.uint16)
    batches = list(fixed_eval_batches(tokens, 8, 2, 2, seed + 1))
    assert len(batches) == 2 and batches[0][0].shape == (2, 8)


def test_a_fields_help_text_is_kept_in_its_metadata():
    """`tinygpt train --help` shows it beside the field's flag (tinygpt.commands.arguments)."""
    assert field_help(ModelConfig)["n_layer"] == "transformer blocks"
    assert field_help(SampleConfig)["precision"].startswith("weights decoding reads")
    assert "dtype" not in field_help(TrainConfig)  # a field without help text
