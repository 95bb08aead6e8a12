import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.loss import IGNORE_INDEX, language_model_loss


@pytest.mark.parametrize("init", ["gpt2", "xavier"])
@pytest.mark.parametrize("bias", [True, False])
def test_changing_a_future_token_leaves_earlier_logits_unchanged(
    tiny_config, init, bias, assert_causal
):
    torch.manual_seed(0)
    assert_causal(GPT(dataclasses.replace(tiny_config, init=init, bias=bias)).eval(), 7)


def test_tiny_model_overfits_one_batch(tiny_config, loss_after_overfitting):
    torch.manual_seed(0)
    assert loss_after_overfitting(GPT(tiny_config)) < 0.05  # from ln(37) = 3.6


def test_output_head_is_tied_to_the_token_embedding_only_when_asked(tiny_config):
    tied = GPT(tiny_config)
    assert tied.lm_head.weight.data_ptr() == tied.wte.weight.data_ptr()
    untied = GPT(dataclasses.replace(tiny_config, tie_weights=False))
    assert untied.lm_head.weight.data_ptr() != untied.wte.weight.data_ptr()
    assert untied.num_params() == tied.num_params() + tiny_config.vocab_size * tiny_config.n_embd


def test_gpt2_init_scales_residual_projections_by_depth():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=65, block_size=64, n_layer=8, n_head=4, n_embd=256)
    model = GPT(config)
    expected = 0.02 / math.sqrt(2 * config.n_layer)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_xavier_init_uses_glorot_uniform_bounds():
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=128, init="xavier"
    )
    weight = GPT(config).blocks[0].mlp.fc.weight  # (512, 128)
    bound = math.sqrt(6 / (128 + 512))
    assert weight.abs().max().item() <= bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_parameter_count_and_flops_match_nanogpt_baby_model():
    config = ModelConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False)
    model = GPT(config)
    assert model.num_params() == 795_904  # nanoGPT prints "number of parameters: 0.80M"
    # nanoGPT's estimate: 6N + 12 L C T with N the non-embedding parameter count
    matmul_weights = 4 * 12 * 128 * 128 + 65 * 128
    assert model.flops_per_token() == 6 * matmul_weights + 12 * 4 * 128 * 64


def test_last_token_only_equals_last_position_of_full_logits(tiny_config):
    model = GPT(tiny_config).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (3, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(idx, last_token_only=True), model(idx)[:, -1:])


def test_sequence_longer_than_block_size_is_refused(tiny_config):
    with pytest.raises(ValueError, match="exceeds block_size"):
        GPT(tiny_config)(torch.zeros(1, tiny_config.block_size + 1, dtype=torch.long))


def test_bf16_autocast_runs_matmuls_in_bf16_and_loss_in_fp32(tiny_config):
    model = GPT(tiny_config)
    seen = []
    model.blocks[0].mlp.fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    idx = torch.randint(0, tiny_config.vocab_size, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = language_model_loss(model(idx), idx)
    assert seen == [torch.bfloat16]
    assert loss.dtype == torch.float32


def test_loss_ignores_masked_targets_and_applies_label_smoothing():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    masked = targets.clone()
    masked[:, :2] = IGNORE_INDEX
    expected = F.cross_entropy(logits[:, 2:].reshape(-1, 11), targets[:, 2:].reshape(-1))
    torch.testing.assert_close(language_model_loss(logits, masked), expected)
    smoothed = language_model_loss(logits, targets, label_smoothing=0.1)
    reference = F.cross_entropy(logits.view(-1, 11), targets.view(-1), label_smoothing=0.1)
    torch.testing.assert_close(smoothed, reference)
