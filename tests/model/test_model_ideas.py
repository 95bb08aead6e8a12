"""Issue 14's model ideas (QK-norm, ReLU squared, zero-initialised projections, logit soft-capping,
the embedding mix): each computes what it says, stays causal and learns, and off they change
nothing. The KV cache is checked in test_kv_cache.py, resume and bf16 in
tests/train/test_variants_in_training.py."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.errors import ConfigError
from tinygpt.export.hf_blocks import hf_export_problems
from tinygpt.model.attention import qk_norm
from tinygpt.model.gpt import GPT
from tinygpt.model.loss import language_model_loss
from tinygpt.model.mlp import MLP

IDEAS = {
    "qk_norm": {"qk_norm": True},
    "qk_norm-rope": {"qk_norm": True, "position": "rope", "norm": "rmsnorm"},
    "relu2": {"activation": "relu2"},
    "zero_init_proj": {"zero_init_proj": True},
    "logit_softcap": {"logit_softcap": 2.0},
    "embed_mix": {"embed_mix": True},
    "untied": {"tie_weights": False},
}
ALL = {key: value for idea in IDEAS.values() for key, value in idea.items()}


@pytest.mark.parametrize("idea", [*IDEAS, "all"])
def test_each_idea_stays_causal_in_training_with_dropout(
    tiny_config, idea, assert_causal, perturbed
):
    fields = ALL if idea == "all" else IDEAS[idea]
    model = perturbed(GPT(dataclasses.replace(tiny_config, dropout=0.2, **fields)))
    assert_causal(model.train(), 7)


def test_all_ideas_together_learn(tiny_config, loss_after_overfitting):
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config, **{**ALL, "logit_softcap": 15.0})
    assert loss_after_overfitting(GPT(config)) < 0.05  # a cap of 2 bounds the loss above 0.5


def test_with_every_idea_off_the_model_has_the_same_parameters(tiny_config):
    names = set(GPT(tiny_config).state_dict())
    assert not any("embed_mix" in name for name in names)  # old checkpoints load as they are
    assert names == set(GPT(dataclasses.replace(tiny_config, zero_init_proj=True)).state_dict())


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys(tiny_config):
    x = torch.randn(2, 5, 3, 8)
    assert torch.allclose(qk_norm(x).pow(2).mean(-1), torch.ones(2, 5, 3), atol=1e-4)
    idx = torch.randint(0, tiny_config.vocab_size, (2, 10))
    for on in (True, False):
        torch.manual_seed(0)
        model = GPT(dataclasses.replace(tiny_config, qk_norm=on)).eval()
        with torch.no_grad():
            before = model(idx)
            for block in model.blocks:
                block.attn.qkv.weight[: 2 * tiny_config.n_embd] *= 5  # the q and k rows
            after = model(idx)
        assert torch.allclose(before, after, atol=1e-5) == on


def test_relu2_is_relu_squared_and_only_for_the_plain_mlp(tiny_config):
    mlp = MLP(dataclasses.replace(tiny_config, activation="relu2"))
    x = torch.randn(2, 5, tiny_config.n_embd)
    torch.testing.assert_close(mlp(x), mlp.proj(F.relu(mlp.fc(x)) ** 2), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="activation=relu2 is for ffn=mlp, not ffn=swiglu"):
        dataclasses.replace(tiny_config, activation="relu2", ffn="swiglu")


def test_zero_init_proj_starts_every_block_as_the_identity(tiny_config):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(tiny_config, zero_init_proj=True)).eval()
    projections = [block.attn.proj for block in model.blocks] + [b.mlp.proj for b in model.blocks]
    assert all(not p.weight.any() for p in projections)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
    idx = torch.randint(0, tiny_config.vocab_size, (2, 10))
    with torch.no_grad():
        embedded = model.wte(idx) + model.wpe(torch.arange(10))  # (B, T, C)
        torch.testing.assert_close(model(idx), model.lm_head(model.ln_f(embedded)))


def test_zero_init_proj_trains_every_weight(tiny_config):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(tiny_config, zero_init_proj=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(0, tiny_config.vocab_size, (4, 12))
    for _ in range(2):  # the first step moves the projections, the second reaches what feeds them
        optimizer.zero_grad()
        model.loss(idx, torch.roll(idx, -1, dims=1)).backward()
        optimizer.step()
    assert all(p.grad is not None and p.grad.any() for p in model.parameters())


def test_logit_softcap_bounds_the_logits_in_forward_and_in_the_loss(tiny_config):
    torch.manual_seed(0)
    capped = GPT(dataclasses.replace(tiny_config, logit_softcap=0.5)).eval()
    plain = GPT(tiny_config).eval()
    plain.load_state_dict(capped.state_dict())
    idx = torch.randint(0, tiny_config.vocab_size, (2, 10))
    with torch.no_grad():
        logits = capped(idx)
        torch.testing.assert_close(logits, 0.5 * torch.tanh(plain(idx) / 0.5))
        assert logits.abs().max() < 0.5
        targets = torch.roll(idx, -1, dims=1)
        torch.testing.assert_close(capped.loss(idx, targets), language_model_loss(logits, targets))
    with pytest.raises(ConfigError, match="logit_softcap caps logits, but adaptive softmax"):
        dataclasses.replace(tiny_config, logit_softcap=30.0, output="adaptive", tie_weights=False)
    with pytest.raises(ConfigError, match=r"logit_softcap=-1\.0 must not be negative"):
        dataclasses.replace(tiny_config, logit_softcap=-1.0)


def test_embed_mix_starts_as_the_plain_model_and_learns_one_pair_per_block(tiny_config):
    torch.manual_seed(0)
    mixed = GPT(dataclasses.replace(tiny_config, embed_mix=True)).eval()
    plain = GPT(tiny_config).eval()
    plain.load_state_dict(mixed.state_dict(), strict=False)
    assert mixed.embed_mix_x.tolist() == [1.0, 1.0] and mixed.embed_mix_x0.tolist() == [0.0, 0.0]
    assert mixed.embed_mix_x.dim() == 1  # a vector: no weight decay, and AdamW under Muon
    idx = torch.randint(0, tiny_config.vocab_size, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(mixed(idx), plain(idx), rtol=0, atol=0)
        mixed.embed_mix_x0[1] = 0.5
        assert not torch.allclose(mixed(idx), plain(idx))
    mixed.loss(idx, torch.roll(idx, -1, dims=1)).backward()
    assert mixed.embed_mix_x.grad.all() and mixed.embed_mix_x0.grad.all()


@pytest.mark.parametrize("field", ["qk_norm", "logit_softcap", "embed_mix"])
def test_what_transformers_blocks_lack_is_refused_and_zero_init_and_relu2_export(field):
    fields = {**ALL, "tie_weights": True, "zero_init_proj": True}
    fields.pop("position"), fields.pop("norm")
    config = ModelConfig(vocab_size=37, n_embd=32, n_head=4, **fields)
    _, problems = hf_export_problems(config)
    assert sum(problem.startswith(f"{field}=") for problem in problems) == 1
    assert not any(problem.startswith("activation=") for problem in problems)  # GPT-2's relu2
    exportable = ModelConfig(vocab_size=37, zero_init_proj=True, activation="relu2")
    assert hf_export_problems(exportable)[1] == []
