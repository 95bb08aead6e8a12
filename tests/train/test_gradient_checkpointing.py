"""Gradient checkpointing recomputes each block in backward: the same gradients (dropout masks
replayed from the saved RNG state), far fewer tensors kept between forward and backward."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from autograd_memory import saved_for_backward
from torch import Tensor

from tinygpt.config_parsing import apply_overrides
from tinygpt.model.gpt import GPT
from tinygpt.train.activation_checkpointing import RecomputedForward, checkpoint_blocks
from tinygpt.train.cpu_speedups import apply_cpu_speedups
from tinygpt.train.start import start_run

VARIANTS = {
    "baseline": {},
    "hybrid": {"attention": "hybrid", "n_kv_head": 2, "local_window": 4, "local_dim": 8},
}


def loss_and_gradients(
    model: GPT, idx: Tensor, use_checkpointing: bool
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    if use_checkpointing:
        checkpoint_blocks(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks for both passes, unless recomputation differs
    loss = model.loss(idx, torch.roll(idx, -1, dims=1))
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters()}
    return loss.detach(), gradients, torch.get_rng_state()


@pytest.mark.parametrize("use_cpu_speedups", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_with_checkpointing_equal_gradients_without(
    tiny_config, variant, dropout, use_cpu_speedups
):
    config = dataclasses.replace(tiny_config, dropout=dropout, **VARIANTS[variant])
    torch.manual_seed(0)
    model = GPT(config).train()
    if use_cpu_speedups:  # as the trainer builds it on a CPU
        apply_cpu_speedups(model)
    idx = torch.randint(0, config.vocab_size, (4, config.block_size))

    loss, gradients, rng_after = loss_and_gradients(model, idx, use_checkpointing=False)
    loss_again, gradients_again, rng_after_again = loss_and_gradients(model, idx, True)

    torch.testing.assert_close(loss_again, loss, rtol=0, atol=1e-6)
    for name, expected in gradients.items():
        torch.testing.assert_close(gradients_again[name], expected, rtol=0, atol=1e-6)
    # recomputation restores the generator: training's random stream (and exact resume) holds
    assert torch.equal(rng_after_again, rng_after)


def saved_bytes(model: GPT, idx: Tensor) -> int:
    """Bytes autograd keeps for backward outside the recomputed blocks, each storage once."""
    with saved_for_backward(model) as saved:
        loss = model.loss(idx, idx)
    loss.backward()
    return saved.total


def test_checkpointing_keeps_a_fraction_of_the_activations(tiny_config):
    config = dataclasses.replace(tiny_config, n_layer=4, block_size=64, dropout=0.1)
    model = GPT(config).train()
    idx = torch.randint(0, config.vocab_size, (4, config.block_size))
    without = saved_bytes(model, idx)
    checkpoint_blocks(model)
    assert saved_bytes(model, idx) < without / 4
    model.eval()  # evaluation and generation never recompute: there is no backward
    with torch.no_grad():
        assert model(idx[:, :8]).shape == (4, 8, config.vocab_size)


def test_training_with_checkpointing_matches_training_without(tiny_run_config, tmp_path):
    """Through the trainer, with dropout and gradient accumulation on (tiny_run_config)."""
    plain = start_run(tiny_run_config, tmp_path / "plain")  # each run seeds torch's generator
    losses = [plain.train_step() for _ in range(3)]
    config = apply_overrides(tiny_run_config, {"gradient_checkpointing": "true"})
    recomputing = start_run(config, tmp_path / "recomputing")
    assert all(isinstance(block.forward, RecomputedForward) for block in recomputing.model.blocks)
    assert not any(isinstance(block.forward, RecomputedForward) for block in plain.model.blocks)
    for expected_loss in losses:
        torch.testing.assert_close(recomputing.train_step(), expected_loss, rtol=0, atol=1e-6)
    expected = dict(plain.model.named_parameters())
    for name, parameter in recomputing.model.named_parameters():
        torch.testing.assert_close(parameter, expected[name], rtol=0, atol=1e-6)
