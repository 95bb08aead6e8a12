"""Hybrid attention: the local additive branch against a position-by-position reference."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from tinygpt.model.gpt import GPT
from tinygpt.model.hybrid_attention import (
    HybridAttention,
    band_to_dense,
    local_additive_attention,
)


@pytest.fixture
def hybrid_config(tiny_config):
    return dataclasses.replace(
        tiny_config, attention="hybrid", n_kv_head=2, local_window=4, local_dim=8
    )


def naive_local_attention(query_features, key_features, v, score_vector, window):
    """The hybrid-attention spec's local branch written out: for each head and position, score
    every position of its window with w^T tanh(q'_t + k'_s), softmax, and average the values."""
    B, H, T, _ = query_features.shape
    group = H // key_features.size(1)
    out = torch.zeros(B, H, T, v.size(-1))
    for h in range(H):
        kv_head = h // group
        for t in range(T):
            start = max(0, t - window + 1)
            scores = torch.stack(
                [
                    torch.tanh(query_features[:, h, t] + key_features[:, kv_head, s])
                    @ score_vector[h]
                    for s in range(start, t + 1)
                ],
                dim=-1,
            )  # (B, positions in window)
            weights = scores.softmax(dim=-1)
            out[:, h, t] = (weights.unsqueeze(-1) * v[:, kv_head, start : t + 1]).sum(dim=1)
    return out


@pytest.mark.parametrize(("H", "K", "T", "window"), [(4, 2, 9, 4), (4, 4, 5, 8), (2, 1, 6, 1)])
def test_local_branch_equals_the_position_by_position_reference(H, K, T, window):
    torch.manual_seed(0)
    B, A, D = 2, 5, 3
    query_features = torch.randn(B, H, T, A)
    key_features = torch.randn(B, K, T, A)
    v = torch.randn(B, K, T, D)
    score_vector = torch.randn(H, A)
    torch.testing.assert_close(
        local_additive_attention(query_features, key_features, v, score_vector, window),
        naive_local_attention(query_features, key_features, v, score_vector, window),
        rtol=1e-5,
        atol=1e-5,
    )


def test_band_to_dense_places_each_window_left_of_the_diagonal():
    band = torch.arange(1.0, 13.0).view(4, 3)  # windows of 3 ending at each position
    expected = torch.tensor(
        [[3.0, 0, 0, 0], [5, 6, 0, 0], [7, 8, 9, 0], [0, 10, 11, 12]]
    )  # row t holds positions t-2..t; slots before position 0 are dropped
    torch.testing.assert_close(band_to_dense(band), expected, rtol=0, atol=0)


def test_hybrid_attention_mixes_the_global_and_local_branches_by_the_per_head_gate(hybrid_config):
    torch.manual_seed(0)
    attention = HybridAttention(hybrid_config).eval()
    with torch.no_grad():
        attention.gate_logit.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0]))
    B, T, C = 2, 7, hybrid_config.n_embd
    H, K, D, A = 4, 2, hybrid_config.head_dim, hybrid_config.local_dim
    x = torch.randn(B, T, C)
    q, k, v, qf, kf = attention.qkv(x).split(attention.split_sizes, dim=2)
    q = q.view(B, T, H, D).transpose(1, 2)
    k = k.view(B, T, K, D).transpose(1, 2)
    v = v.view(B, T, K, D).transpose(1, 2)
    global_out = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), is_causal=True
    )
    local_out = naive_local_attention(
        qf.view(B, T, H, A).transpose(1, 2),
        kf.view(B, T, K, A).transpose(1, 2),
        v,
        attention.score_vector.detach(),
        hybrid_config.local_window,
    )
    gate = torch.sigmoid(attention.gate_logit.detach()).view(1, H, 1, 1)
    mixed = gate * global_out + (1 - gate) * local_out
    expected = attention.proj(mixed.transpose(1, 2).reshape(B, T, C))
    with torch.no_grad():
        torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_hybrid_model_is_causal_and_learns(hybrid_config, dropout, assert_causal,
                                           loss_after_overfitting):  # fmt: skip
    config = dataclasses.replace(hybrid_config, dropout=dropout, ffn="geglu")
    torch.manual_seed(0)
    assert_causal(GPT(config).train(), 6)
    assert_causal(GPT(config).eval(), 2)
    if dropout == 0.0:
        torch.manual_seed(0)
        assert loss_after_overfitting(GPT(config)) < 0.05


def test_hybrid_gradients_reach_the_local_scorer_and_the_gate(hybrid_config):
    torch.manual_seed(0)
    model = GPT(hybrid_config)
    idx = torch.randint(0, hybrid_config.vocab_size, (2, 12))
    model.loss(idx, idx).backward()
    attention = model.blocks[0].attn
    assert attention.score_vector.grad.abs().sum() > 0
    assert attention.gate_logit.grad.abs().sum() > 0


def test_hybrid_flops_count_the_local_branch(hybrid_config, tiny_config):
    hybrid, plain = GPT(hybrid_config), GPT(dataclasses.replace(tiny_config, n_kv_head=2))
    extra_projection = 6 * sum(b.attn.qkv.weight.numel() for b in hybrid.blocks) - 6 * sum(
        b.attn.qkv.weight.numel() for b in plain.blocks
    )
    c = hybrid_config
    local = 6 * c.n_layer * c.local_window * (c.n_embd + c.n_head * c.local_dim)
    assert math.isclose(
        hybrid.flops_per_token(16), plain.flops_per_token(16) + extra_projection + local
    )


def test_local_branch_gradients_pass_a_numerical_check():
    torch.manual_seed(0)
    B, H, K, T, A, D, W = 2, 4, 2, 7, 3, 5, 3
    inputs = [
        torch.randn(B, H, T, A, dtype=torch.float64, requires_grad=True),
        torch.randn(B, K, T, A, dtype=torch.float64, requires_grad=True),
        torch.randn(B, K, T, D, dtype=torch.float64, requires_grad=True),
        torch.randn(H, A, dtype=torch.float64, requires_grad=True),
    ]
    torch.autograd.gradcheck(
        lambda q, k, v, w: local_additive_attention(q, k, v, w, W), inputs, eps=1e-6
    )


@pytest.mark.parametrize("attention_dropout", [True, False])
def test_attention_dropout_covers_both_branches_weights(hybrid_config, attention_dropout):
    config = dataclasses.replace(hybrid_config, dropout=0.3, attention_dropout=attention_dropout)
    attention = HybridAttention(config)
    expected = 0.3 if attention_dropout else 0.0
    assert (attention.dropout_p, attention.local_dropout.p) == (expected, expected)
    assert attention.resid_dropout.p == 0.3
