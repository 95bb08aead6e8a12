"""Gated feed-forward networks and the GELU variants; grouped-query attention in a whole model."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tinygpt.model.gpt import GPT
from tinygpt.model.mlp import MLP, GatedMLP


@pytest.mark.parametrize("ffn", ["swiglu", "geglu"])
def test_gated_feed_forward_keeps_the_weight_count_and_learns(
    tiny_config, ffn, loss_after_overfitting
):
    config = dataclasses.replace(tiny_config, ffn=ffn, n_embd=96, n_head=4)
    plain = dataclasses.replace(config, ffn="mlp")
    assert config.ffn_width == 256  # 8/3 x 96, rounded up to 64
    gated_params = GPT(config).num_params()
    plain_params = GPT(plain).num_params()
    assert abs(gated_params - plain_params) / plain_params < 0.05
    torch.manual_seed(0)
    assert loss_after_overfitting(GPT(dataclasses.replace(tiny_config, ffn=ffn))) < 0.05


@pytest.mark.parametrize(("n_kv_head", "ffn"), [(1, "swiglu"), (2, "geglu")])
def test_variants_stay_causal_in_training_with_dropout(tiny_config, n_kv_head, ffn, assert_causal):
    config = dataclasses.replace(tiny_config, n_kv_head=n_kv_head, ffn=ffn, dropout=0.2)
    assert_causal(GPT(config).train(), 8)


@pytest.mark.parametrize(("activation", "approximate"), [("gelu", "none"), ("gelu_tanh", "tanh")])
def test_mlp_and_geglu_gate_use_the_configured_gelu(tiny_config, activation, approximate):
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config, activation=activation)
    x = 3 * torch.randn(2, 5, config.n_embd)  # wide enough for erf and tanh GELUs to differ
    mlp = MLP(config).eval()
    expected = mlp.proj(F.gelu(mlp.fc(x), approximate=approximate))
    torch.testing.assert_close(mlp(x), expected, rtol=0, atol=0)
    other = "tanh" if approximate == "none" else "none"
    assert not torch.allclose(mlp(x), mlp.proj(F.gelu(mlp.fc(x), approximate=other)), atol=1e-6)

    geglu = GatedMLP(dataclasses.replace(config, ffn="geglu")).eval()
    gate, up = geglu.fc(x).chunk(2, dim=-1)
    expected = geglu.proj(F.gelu(gate, approximate=approximate) * up)
    torch.testing.assert_close(geglu(x), expected, rtol=0, atol=0)
