"""AdamW with weight decay on matrices and embeddings only, over the trainable tensors."""

import dataclasses

import pytest
import torch

from tinygpt.config import TrainConfig
from tinygpt.model.gpt import GPT
from tinygpt.train.optim import MuonWithAdamW, build_optimizer, set_learning_rate


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


def muon_config(**fields) -> TrainConfig:
    return TrainConfig(optimizer="muon", learning_rate=1e-3, muon_lr=0.02, **fields)


def test_muon_takes_the_blocks_linear_weights_and_adamw_the_rest(tiny_config):
    model = GPT(dataclasses.replace(tiny_config, attention="hybrid", local_window=4, local_dim=8))
    optimizer = build_optimizer(model, muon_config(weight_decay=0.1), "cpu")
    assert isinstance(optimizer, MuonWithAdamW)
    muon = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {id(p) for g in optimizer.adamw.param_groups for p in g["params"]}
    names = {id(p): name for name, p in model.named_parameters()}
    assert sorted(names[i] for i in muon) == sorted(
        f"blocks.{i}.{part}.weight"
        for i in range(tiny_config.n_layer)
        for part in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")
    )
    assert not muon & adamw
    assert muon | adamw == {id(p) for p in model.parameters()}
    assert id(model.wte.weight) in adamw  # the embedding (tied to the head) stays with AdamW
    assert id(model.blocks[0].attn.score_vector) in adamw  # the hybrid's small tensors too
    # weight decay as with AdamW alone: matrices and embeddings, never gains or biases
    decayed, plain = decayed_and_not(optimizer)
    assert muon <= decayed and id(model.wte.weight) in decayed
    assert all(id(p) in plain for p in model.parameters() if p.dim() < 2)


def test_muon_and_adamw_follow_one_schedule_in_proportion(tiny_config):
    optimizer = build_optimizer(GPT(tiny_config), muon_config(muon_momentum=0.9), "cpu")
    set_learning_rate(optimizer, 5e-4)  # half the peak: both at half their own peak
    assert [g["lr"] for g in optimizer.adamw.param_groups] == [5e-4, 5e-4]
    assert [g["lr"] for g in optimizer.muon.param_groups] == [pytest.approx(0.01)]
    assert optimizer.param_groups[0]["lr"] == 5e-4  # what the trainer logs: AdamW's
    assert optimizer.muon.param_groups[0]["momentum"] == 0.9


def test_muon_steps_and_zeroes_every_parameter_and_saves_both_states(tiny_config):
    model = GPT(tiny_config)
    optimizer = build_optimizer(model, muon_config(), "cpu")
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randint(0, tiny_config.vocab_size, (2, 8))
    model.loss(x, x).backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    state = optimizer.state_dict()
    assert set(state) == {"adamw", "muon"}
    assert all("momentum_buffer" in s for s in state["muon"]["state"].values())
    fresh = build_optimizer(GPT(tiny_config), muon_config(), "cpu")
    fresh.load_state_dict(state)
    assert len(fresh.muon.state) == len(optimizer.muon.state) > 0


def test_muon_without_hidden_matrices_is_plain_adamw(tiny_config):
    model = GPT(tiny_config)
    for block in model.blocks:
        block.requires_grad_(False)
    optimizer = build_optimizer(model, muon_config(), "cpu")
    assert isinstance(optimizer, torch.optim.AdamW)


def test_a_grad_scaler_unscales_and_steps_both_optimizers(tiny_config):
    """fp16 training goes through GradScaler.unscale_/step, which see only `param_groups` and
    `step`: a scaled step must equal the plain one."""
    x = torch.randint(0, tiny_config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    results = []
    for scale in (None, 2.0**10):
        torch.manual_seed(0)
        model = GPT(tiny_config)
        optimizer = build_optimizer(model, muon_config(), "cpu")
        scaler = torch.amp.GradScaler("cpu", init_scale=scale or 1.0, enabled=scale is not None)
        scaler.scale(model.loss(x, x)).backward()
        scaler.unscale_(optimizer)
        # Muon normalises its update: only the gradients show a missed unscale
        grads = [p.grad.clone() for p in model.parameters()]
        scaler.step(optimizer)
        results.append(grads + [p.detach().clone() for p in model.parameters()])
    for plain, scaled in zip(*results, strict=True):
        torch.testing.assert_close(scaled, plain)
