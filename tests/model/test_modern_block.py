"""RMSNorm and rotary position embeddings: the modern (Llama-style) block."""

import dataclasses

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.errors import ConfigError
from tinygpt.model.gpt import GPT
from tinygpt.model.norm import RMSNorm
from tinygpt.model.rope import RotaryEmbedding


@pytest.fixture
def modern_config(tiny_config):
    return dataclasses.replace(
        tiny_config, norm="rmsnorm", position="rope", ffn="swiglu", bias=False
    )


def test_rmsnorm_divides_by_the_root_mean_square():
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 9.0))
    x = torch.randn(3, 5, 8)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * torch.arange(1.0, 9.0)
    torch.testing.assert_close(norm(x), expected)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_rope_scores_depend_only_on_the_distance_between_positions():
    rope = RotaryEmbedding(head_dim=16, max_positions=64)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def at(position: int) -> torch.Tensor:
        return torch.tensor([[position]])  # (B, T) positions

    def score(m: int, n: int) -> torch.Tensor:
        return (rope(q, at(m)) * rope(k, at(n))).sum()

    torch.testing.assert_close(score(5, 2), score(40, 37), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 4))
    torch.testing.assert_close(rope(q, at(0)), q)  # position 0 is no rotation
    assert torch.allclose(rope(q, at(9)).norm(), q.norm())  # rotations keep lengths


def test_modern_block_is_causal_learns_and_has_no_position_table(
    modern_config, assert_causal, loss_after_overfitting
):
    torch.manual_seed(0)
    model = GPT(modern_config)
    assert model.wpe is None
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert_causal(model.eval(), 6)
    assert loss_after_overfitting(model.train()) < 0.05


def test_rope_tables_are_not_saved_in_checkpoints(modern_config):
    state = GPT(modern_config).state_dict()
    assert not any(name.endswith((".cos", ".sin")) for name in state)


def test_rope_needs_an_even_head_dimension():
    with pytest.raises(ConfigError, match="head dimension"):
        ModelConfig(vocab_size=10, n_embd=36, n_head=4, position="rope")  # head dim 9
