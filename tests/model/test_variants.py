"""Grouped-query attention, gated feed-forward networks and the GELU variants."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.errors import ConfigError
from tinygpt.model.attention import CausalSelfAttention, causal_attention_with_dropout
from tinygpt.model.gpt import GPT
from tinygpt.model.mlp import MLP, GatedMLP


def test_gqa_with_as_many_kv_heads_as_query_heads_is_multi_head_attention(tiny_config):
    torch.manual_seed(0)
    plain = CausalSelfAttention(tiny_config).eval()
    explicit = CausalSelfAttention(dataclasses.replace(tiny_config, n_kv_head=4)).eval()
    explicit.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9, tiny_config.n_embd)
    with torch.no_grad():
        torch.testing.assert_close(explicit(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_gqa_equals_attention_with_each_kv_head_repeated_for_its_query_heads(
    tiny_config, n_kv_head
):
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config, n_kv_head=n_kv_head)
    attention = CausalSelfAttention(config).eval()
    B, T, H, K, D = 2, 7, config.n_head, n_kv_head, config.head_dim
    x = torch.randn(B, T, config.n_embd)
    q, k, v = attention.qkv(x).split(attention.split_sizes, dim=2)
    q = q.view(B, T, H, D).transpose(1, 2)
    k = k.view(B, T, K, D).transpose(1, 2).repeat_interleave(H // K, dim=1)
    v = v.view(B, T, K, D).transpose(1, 2).repeat_interleave(H // K, dim=1)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(D)).masked_fill(
        torch.ones(T, T).triu(1).bool(), float("-inf")
    )
    expected = attention.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1))
    with torch.no_grad():
        torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)
        written_out = causal_attention_with_dropout(
            q, k[:, :: H // K], v[:, :: H // K], 0.0
        )  # the CPU dropout path, given the un-repeated kv heads
        torch.testing.assert_close(written_out, scores.softmax(-1) @ v, rtol=1e-5, atol=1e-5)


def test_gqa_shrinks_the_key_value_projection(tiny_config):
    mha = CausalSelfAttention(tiny_config)
    mqa = CausalSelfAttention(dataclasses.replace(tiny_config, n_kv_head=1))
    C, D = tiny_config.n_embd, tiny_config.head_dim
    assert mha.qkv.weight.shape == (3 * C, C)
    assert mqa.qkv.weight.shape == (C + 2 * D, C)


def test_kv_heads_must_divide_query_heads():
    with pytest.raises(ConfigError, match="n_kv_head=3 does not divide n_head=4"):
        ModelConfig(vocab_size=10, n_head=4, n_embd=32, n_kv_head=3)


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
