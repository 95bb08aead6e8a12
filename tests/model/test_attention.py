"""Causal self-attention: position t sees 0..t only, SDPA gives the written-out softmax, and
grouped-query attention serves each group of query heads from its key/value head."""

import dataclasses
import math

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.errors import ConfigError
from tinygpt.eval.metrics import causal_attention_weights
from tinygpt.model.attention import CausalSelfAttention


def test_attention_equals_explicit_masked_softmax(tiny_config):
    torch.manual_seed(0)
    attention = CausalSelfAttention(tiny_config).eval()
    x = torch.randn(2, 10, tiny_config.n_embd)
    B, T, C, H, D = 2, 10, tiny_config.n_embd, tiny_config.n_head, tiny_config.head_dim
    q, k, v = attention.qkv(x).split(C, dim=2)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    expected = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    with torch.no_grad():
        torch.testing.assert_close(attention(x), attention.proj(expected), rtol=1e-5, atol=1e-5)


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
        written_out = causal_attention_weights(q, k[:, :: H // K]) @ v  # the un-repeated kv heads
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


def heads(attention: CausalSelfAttention, x: torch.Tensor):
    """The q (B, H, T, D), k and v (B, K, T, D) that `attention` computes for x."""
    return attention.split_heads(attention.qkv(x), None)


@pytest.mark.parametrize("n_kv_head", [0, 2, 1])
def test_sdpa_equals_the_written_out_causal_softmax_without_dropout(tiny_config, n_kv_head):
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config, n_kv_head=n_kv_head, position="rope")
    attention = CausalSelfAttention(config).eval()
    with torch.no_grad():
        q, k, v = heads(attention, torch.randn(2, 11, config.n_embd))
        H, K = q.size(1), k.size(1)
        written_out = causal_attention_weights(q, k) @ v.repeat_interleave(H // K, dim=1)
        torch.testing.assert_close(attention.attend(q, k, v), written_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_a_changed_position_leaves_every_earlier_output_unchanged(tiny_config, training):
    """With dropout on the weights in training, the masks replayed from the same seed."""
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config, n_kv_head=2, dropout=0.3)
    attention = CausalSelfAttention(config).train(training)
    x = torch.randn(2, 12, config.n_embd)
    changed = x.clone()
    changed[:, 7] += 1.0
    torch.manual_seed(1)
    before = attention(x)
    torch.manual_seed(1)
    after = attention(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7], rtol=0, atol=0)
    assert not torch.allclose(before[:, 7:], after[:, 7:])


@pytest.mark.parametrize("attention_dropout", [True, False])
def test_attention_dropout_false_leaves_the_weights_undropped(tiny_config, attention_dropout):
    """dropout=0.5 with attention_dropout=false: the weights are never dropped (training equals
    eval before the output dropout); with it true they are."""
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config, dropout=0.5, attention_dropout=attention_dropout)
    attention = CausalSelfAttention(config)
    q, k, v = (torch.randn(2, tiny_config.n_head, 10, tiny_config.head_dim) for _ in range(3))
    evaluated = attention.eval().attend(q, k, v)
    trained = attention.train().attend(q, k, v)
    assert torch.allclose(trained, evaluated) is not attention_dropout


def test_attention_dropout_false_keeps_the_residual_dropout(tiny_config):
    config = dataclasses.replace(tiny_config, dropout=0.5, attention_dropout=False)
    attention = CausalSelfAttention(config).train()
    x = torch.randn(2, 10, tiny_config.n_embd)
    assert (attention(x) == 0).float().mean() > 0.3  # about half of the outputs dropped
