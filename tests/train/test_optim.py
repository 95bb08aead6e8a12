"""AdamW with weight decay on matrices and embeddings only, over the trainable tensors."""

import dataclasses

import pytest
import torch

from tinygpt.config import TrainConfig
from tinygpt.model.gpt import GPT
from tinygpt.train.optim import build_optimizer, set_learning_rate


def decayed_and_not(optimizer: torch.optim.Optimizer) -> tuple[set[int], set[int]]:
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    return decayed, plain


def test_only_tensors_of_two_or_more_dimensions_are_decayed(tiny_config):
    model = GPT(tiny_config)
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.1), "cpu")
    decayed, plain = decayed_and_not(optimizer)
    for name, parameter in model.named_parameters():
        expected = decayed if parameter.dim() >= 2 else plain
        assert id(parameter) in expected, name
    assert id(model.wte.weight) in decayed  # embeddings are matrices too (nanoGPT)
    gains_and_biases = [p for p in model.parameters() if p.dim() == 1]
    assert gains_and_biases and all(id(p) in plain for p in gains_and_biases)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_every_trainable_parameter_is_optimized_once_and_frozen_ones_not(tiny_config):
    model = GPT(tiny_config)
    frozen = next(p for p in model.parameters() if p.dim() >= 2)
    frozen.requires_grad_(False)
    optimizer = build_optimizer(model, TrainConfig(), "cpu")
    optimized = [id(p) for g in optimizer.param_groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(optimized) == sorted(trainable)  # tied weights appear once
    assert id(frozen) not in optimized


def test_the_settings_reach_adamw(tiny_config):
    config = dataclasses.replace(TrainConfig(), learning_rate=3e-4, beta1=0.8, beta2=0.95)
    optimizer = build_optimizer(GPT(tiny_config), config, "cpu")
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(3e-4)
        assert group["betas"] == (0.8, 0.95)


@pytest.mark.parametrize(("device_type", "fused"), [("cpu", True), ("cuda", True), ("mps", False)])
def test_the_fused_kernel_is_asked_for_where_it_exists(tiny_config, device_type, fused):
    optimizer = build_optimizer(GPT(tiny_config), TrainConfig(), device_type)
    assert bool(optimizer.defaults["fused"]) is fused


def test_set_learning_rate_sets_every_group(tiny_config):
    optimizer = build_optimizer(GPT(tiny_config), TrainConfig(), "cpu")
    set_learning_rate(optimizer, 1.5e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [1.5e-3, 1.5e-3]
