import dataclasses

import pytest
import torch

from tinygpt.model.attention import causal_attention_with_dropout
from tinygpt.model.dropout import dropout, keep_mask
from tinygpt.model.gpt import GPT


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([2_000_000]), p, torch.device("cpu"))
    assert keep.float().mean().item() == pytest.approx(1 - p, abs=2e-3)


def test_dropout_scales_kept_values_and_backward_uses_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(1000, 100, requires_grad=True)
    y = dropout(x, 0.2, training=True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * 1.25)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * 1.25)
    assert dropout(x, 0.2, training=False) is x


def test_same_seed_same_mask():
    torch.manual_seed(3)
    first = keep_mask(torch.Size([4096]), 0.3, torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask(torch.Size([4096]), 0.3, torch.device("cpu")))


def test_attention_with_dropout_is_causal_in_training(tiny_config, assert_causal):
    assert_causal(GPT(dataclasses.replace(tiny_config, dropout=0.3)).train(), 9)


def test_attention_with_zero_dropout_equals_sdpa():
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal_attention_with_dropout(q, k, v, 0.0), expected)
