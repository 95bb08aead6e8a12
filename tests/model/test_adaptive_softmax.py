"""Adaptive softmax output (the dialog chatbot spec, docs/specs.md): a proper distribution, the
same loss in training and evaluation, and clear errors for settings it cannot honour."""

import dataclasses

import pytest
import torch

from tinygpt.config import ModelConfig, RunConfig, TrainConfig
from tinygpt.errors import ConfigError
from tinygpt.model.gpt import GPT
from tinygpt.model.loss import IGNORE_INDEX


@pytest.fixture
def adaptive_config(tiny_config):
    """Tail clusters are projected to n_embd / 4 and / 16 dimensions; 64 leaves room to learn."""
    return dataclasses.replace(
        tiny_config,
        vocab_size=120,
        n_embd=64,
        output="adaptive",
        tie_weights=False,
        adaptive_cutoffs="16,48",
    )


def test_adaptive_log_probabilities_sum_to_one(adaptive_config):
    torch.manual_seed(0)
    model = GPT(adaptive_config).eval()
    idx = torch.randint(0, 120, (3, 10))
    with torch.no_grad():
        log_probs = model(idx)  # (3, 10, 120)
        last = model(idx, last_token_only=True)
    assert log_probs.shape == (3, 10, 120)
    total = log_probs.exp().sum(dim=-1)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-5)
    torch.testing.assert_close(last[:, 0], log_probs[:, -1], rtol=1e-6, atol=1e-6)


def test_adaptive_training_loss_is_the_mean_negative_log_probability_of_counted_targets(
    adaptive_config,
):
    torch.manual_seed(0)
    model = GPT(adaptive_config).eval()
    idx = torch.randint(0, 120, (2, 8))
    targets = torch.randint(0, 120, (2, 8))
    targets[0, :3] = IGNORE_INDEX
    with torch.no_grad():
        log_probs = model(idx)
        counted = targets != IGNORE_INDEX
        picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        expected = -picked[counted].mean()
        torch.testing.assert_close(model.loss(idx, targets), expected, rtol=1e-5, atol=1e-5)


def test_adaptive_model_learns_and_stays_causal(adaptive_config, loss_after_overfitting,
                                                assert_causal):  # fmt: skip
    torch.manual_seed(0)
    assert_causal(GPT(adaptive_config).eval(), 5)
    torch.manual_seed(0)
    assert loss_after_overfitting(GPT(adaptive_config)) < 0.05


def test_default_cutoffs_are_a_sixteenth_and_a_quarter_of_the_vocabulary():
    config = ModelConfig(vocab_size=32000, output="adaptive", tie_weights=False)
    assert config.cutoffs == [2000, 8000]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tie_weights": True}, "--tie_weights false"),
        ({"adaptive_cutoffs": "48,16"}, "must be ascending"),
        ({"adaptive_cutoffs": "16,120"}, "must be ascending"),
        ({"adaptive_cutoffs": "16,lots"}, "comma-separated whole numbers"),
    ],
)
def test_bad_adaptive_settings_are_refused(adaptive_config, changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(adaptive_config, **changes)


def test_adaptive_softmax_refuses_label_smoothing(adaptive_config):
    with pytest.raises(ConfigError, match="--label_smoothing 0"):
        RunConfig(model=adaptive_config, train=TrainConfig(label_smoothing=0.1))
