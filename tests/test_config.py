import dataclasses

import numpy as np
import pytest
import torch

from tinygpt.config import (
    SEED_LIMIT,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    apply_given_settings,
    check_given_settings,
    given_field_names,
)
from tinygpt.errors import ConfigError
from tinygpt.model.gpt import GPT
from tinygpt.presets import get_preset


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


def given(config: RunConfig, origin: str = "the flags", **settings: object) -> RunConfig:
    return apply_given_settings(config, {k: str(v) for k, v in settings.items()}, origin)


def test_max_iters_given_drops_the_lower_layers_epochs():
    preset = get_preset("modern-tinystories")
    assert preset.train.epochs > 0
    config = given(preset, max_iters=400)
    assert (config.train.max_iters, config.train.epochs) == (400, 0)


def test_epochs_given_wins_over_a_lower_max_iters():
    """The run's length then follows the data: steps_for_epochs turns epochs into steps."""
    from tinygpt.train.loop import steps_for_epochs

    config = given(get_preset("baby-shakespeare"), epochs=2)
    assert config.train.epochs == 2
    tokens_per_step = config.train.batch_size * config.model.block_size  # 12 x 64
    assert steps_for_epochs(config, 1_000_000).max_iters == -(-2 * 1_000_000 // tokens_per_step)


def test_a_decay_over_the_whole_run_follows_the_new_length():
    preset = get_preset("baby-shakespeare")
    assert preset.train.lr_decay_iters == preset.train.max_iters  # "decay over the whole run"
    assert given(preset, max_iters=400).train.lr_decay_iters == 0  # 0: over max_iters
    kept = given(preset, max_iters=400, lr_decay_iters=300)
    assert kept.train.lr_decay_iters == 300


def test_a_decay_shorter_than_the_run_stays():
    preset = given(RunConfig(), "file", max_iters=1000, lr_decay_iters=500)
    assert given(preset, max_iters=2000).train.lr_decay_iters == 500


def test_epochs_and_max_iters_in_one_place_conflict():
    with pytest.raises(ConfigError, match=r"config file a\.toml set both epochs=3 and max_iters"):
        given(RunConfig(), "config file a.toml", epochs=3, max_iters=100)
    assert given(RunConfig(), epochs=0, max_iters=100).train.max_iters == 100  # 0: off


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"warmup_iters": 500, "max_iters": 100}, "warmup_iters=500 is not below max_iters=100"),
        ({"warmup_iters": 200, "lr_decay_iters": 150}, "lr_decay_iters=150 is not after"),
    ],
)
def test_given_step_counts_that_contradict_each_other_are_refused(settings, message):
    config = given(RunConfig(), **settings)
    with pytest.raises(ConfigError, match=message):
        check_given_settings(config, given_field_names(settings))
    check_given_settings(config, set())  # from a preset: a short run may keep its warm-up


def test_given_field_names_accepts_every_spelling():
    names = given_field_names({"train.max_iters": 1, "max-iters": 2, "model.n-layer": 3})
    assert names == {"max_iters", "n_layer"}


def test_a_directory_as_config_file_is_one_config_error(tmp_path):
    from tinygpt.config import load_toml_overrides

    with pytest.raises(ConfigError, match="is a directory; give a TOML file"):
        load_toml_overrides(tmp_path)
