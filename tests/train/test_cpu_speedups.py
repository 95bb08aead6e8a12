"""The CPU training speed-ups: the fast dropout mask is dropout, the written-out attention is
SDPA's, and a model with both swapped in computes what the plain one does where no random
numbers are drawn, stays causal where they are, and keeps LoRA's own dropout."""

import dataclasses
import types

import pytest
import torch
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.finetune.lora import LoraSettings, add_lora
from tinygpt.model.gpt import GPT
from tinygpt.train.cpu_speedups import (
    AttendWithFastDropout,
    FastMaskDropout,
    apply_cpu_speedups,
    causal_attention_with_dropout,
    fast_dropout,
    keep_mask,
)

HYBRID = {"attention": "hybrid", "n_kv_head": 2, "local_window": 4, "local_dim": 8}


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([2_000_000]), p, torch.device("cpu"))
    assert keep.float().mean().item() == pytest.approx(1 - p, abs=2e-3)


def test_dropout_scales_kept_values_and_backward_uses_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(1000, 100, requires_grad=True)
    y = fast_dropout(x, 0.2, training=True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * 1.25)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * 1.25)
    assert fast_dropout(x, 0.2, training=False) is x


def test_same_seed_same_mask():
    torch.manual_seed(3)
    first = keep_mask(torch.Size([4096]), 0.3, torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask(torch.Size([4096]), 0.3, torch.device("cpu")))


def sped_up(config: ModelConfig) -> GPT:
    torch.manual_seed(0)
    model = GPT(config)
    apply_cpu_speedups(model)
    return model


@pytest.mark.parametrize("variant", [{}, HYBRID])
def test_attention_with_dropout_is_causal_in_training(tiny_config, variant):
    """Changing the token at `position` leaves every earlier logit bitwise unchanged, with the
    dropout masks replayed from the same seed."""
    model = sped_up(dataclasses.replace(tiny_config, dropout=0.3, **variant)).train()
    position = 9
    idx = torch.randint(0, tiny_config.vocab_size, (2, 12))
    changed = idx.clone()
    changed[:, position] = (changed[:, position] + 1) % tiny_config.vocab_size
    torch.manual_seed(0)
    before = model(idx)
    torch.manual_seed(0)
    after = model(changed)
    torch.testing.assert_close(before[:, :position], after[:, :position], rtol=0, atol=0)
    assert not torch.allclose(before[:, position:], after[:, position:])


def test_attention_with_zero_dropout_equals_sdpa():
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal_attention_with_dropout(q, k, v, 0.0), expected)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_written_out_attention_serves_each_query_group_from_its_kv_head(n_kv_head):
    q = torch.randn(2, 4, 10, 8)
    k, v = (torch.randn(2, n_kv_head, 10, 8) for _ in range(2))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(causal_attention_with_dropout(q, k, v, 0.0), expected)


def test_every_dropout_and_attention_of_the_model_is_swapped(tiny_config):
    model = sped_up(dataclasses.replace(tiny_config, dropout=0.1, **HYBRID))
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(type(m) is FastMaskDropout and m.p == 0.1 for m in dropouts)
    assert all(isinstance(b.attn.attend, AttendWithFastDropout) for b in model.blocks)
    state = model.state_dict()
    apply_cpu_speedups(model)  # a second time changes nothing
    assert all(isinstance(b.attn.attend.sdpa, types.MethodType) for b in model.blocks)
    assert model.state_dict().keys() == state.keys()


@pytest.mark.parametrize("variant", [{}, HYBRID])
def test_without_dropout_the_sped_up_model_is_the_plain_one(tiny_config, variant):
    """p = 0 draws nothing: the written-out attention and the swapped dropouts must then give
    the plain model's loss and gradients."""
    config = dataclasses.replace(tiny_config, **variant)
    torch.manual_seed(0)
    plain = GPT(config).train()
    fast = sped_up(config).train()
    fast.load_state_dict(plain.state_dict())
    fast.blocks[0].attn.dropout_p = 1e-9  # take the written-out path, drop (almost) nothing
    idx = torch.randint(0, config.vocab_size, (3, config.block_size))
    losses = [model.loss(idx, idx.roll(-1, dims=1)) for model in (plain, fast)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_lora_dropout_keeps_torchs_kernel(tiny_config):
    model = GPT(dataclasses.replace(tiny_config, dropout=0.1))
    add_lora(model, LoraSettings(r=2, dropout=0.2))
    apply_cpu_speedups(model)
    lora_dropouts = [
        m
        for name, m in model.named_modules()
        if "lora_dropout" in name and isinstance(m, torch.nn.Dropout)
    ]
    assert lora_dropouts and all(type(m) is torch.nn.Dropout for m in lora_dropouts)
    assert type(model.drop) is FastMaskDropout


@pytest.mark.parametrize("variant", [{}, HYBRID])
def test_without_attention_dropout_training_attends_with_sdpa(tiny_config, variant, monkeypatch):
    """attention_dropout=false: the sped-up model never writes the attention out, so torch's
    fused kernel runs; the other dropouts still draw their masks."""
    config = dataclasses.replace(tiny_config, dropout=0.3, attention_dropout=False, **variant)
    model = sped_up(config).train()

    def refuse(*args: object) -> None:
        raise AssertionError("the written-out attention ran")

    monkeypatch.setattr("tinygpt.train.cpu_speedups.causal_attention_with_dropout", refuse)
    idx = torch.randint(0, config.vocab_size, (2, 12))
    torch.manual_seed(0)
    first = model(idx)
    torch.manual_seed(1)
    assert not torch.allclose(first, model(idx))  # the residual dropout still draws masks
