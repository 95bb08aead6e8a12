"""Decoding weights: a Linear seen through `with_fast_weights` is exactly nn.Linear except for
few-row products without gradients, close there, never stale; the model itself is untouched."""

import threading

import pytest
import torch
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.generate.fast_weights import (
    DECODING_COPIES,
    FEW_ROWS,
    STREAMED_WEIGHT_BYTES,
    FastWeightsLinear,
    decoding_dtype,
    with_fast_weights,
)
from tinygpt.model.gpt import GPT


@pytest.fixture
def layer() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(64, 96, bias=True)


def reference(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def assert_close_to_float32(out: torch.Tensor, expected: torch.Tensor) -> None:
    """Within float16's rounding of the weights, inputs and outputs (~1e-3 of the largest)."""
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-3 * expected.abs().max().item())


def test_outside_decoding_it_is_exactly_nn_linear(layer):
    x = torch.randn(1, 2, 64)
    fast = with_fast_weights(layer, torch.float16)
    with torch.no_grad():
        assert torch.equal(layer(x), reference(layer, x))
    assert type(layer) is torch.nn.Linear and "forward" not in vars(layer)  # left as it was
    assert isinstance(fast, FastWeightsLinear)
    assert DECODING_COPIES[layer].weight is None  # no copy was made


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_training_and_long_inputs_take_the_plain_path_even_while_decoding(layer, dtype):
    many = torch.randn(FEW_ROWS + 1, 64)
    few = torch.randn(3, 64)
    fast = with_fast_weights(layer, dtype)
    with torch.no_grad():
        assert torch.equal(fast(many), reference(layer, many))
    out = fast(few)  # gradients on: training
    assert torch.equal(out, reference(layer, few))
    out.sum().backward()
    assert layer.weight.grad is not None


def test_float32_decoding_matches_and_float16_is_close(layer):
    x = torch.randn(2, 1, 64)
    expected = reference(layer, x)
    with torch.no_grad():
        exact = with_fast_weights(layer, torch.float32)(x)
        half = with_fast_weights(layer, torch.float16)(x)
    torch.testing.assert_close(exact, expected, rtol=1e-6, atol=1e-6)
    assert half.dtype == torch.float32 and not torch.equal(half, expected)
    assert_close_to_float32(half, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_copy_follows_in_place_and_replaced_weights(layer, dtype):
    x = torch.randn(1, 64)
    fast = with_fast_weights(layer, dtype)
    with torch.no_grad():
        fast(x)  # makes the copy
        layer.weight.mul_(2)  # an optimizer step updates in place
        layer.bias.add_(1)
        assert_close_to_float32(fast(x), reference(layer, x))
        layer.weight = torch.nn.Parameter(torch.randn(96, 64))  # loading a checkpoint
        assert_close_to_float32(fast(x), reference(layer, x))


def test_decoding_leaves_the_layer_exact_for_every_other_caller(layer):
    """Another thread (or anyone) calling the layer itself while a decoder reads the float16
    copy gets exactly nn.Linear."""
    x = torch.randn(1, 64)
    seen = {}

    def other_thread() -> None:
        with torch.no_grad():
            seen["out"] = layer(x)

    fast = with_fast_weights(layer, torch.float16)
    with torch.no_grad():
        fast(x)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert torch.equal(seen["out"], reference(layer, x).detach())


def test_only_the_supported_precisions_are_accepted(layer):
    with pytest.raises(ValueError, match="float16"):
        with_fast_weights(layer, torch.bfloat16)


def test_auto_reads_float16_only_when_the_weights_outgrow_the_cache():
    small = torch.nn.Sequential(torch.nn.Linear(256, 256))  # 256 KiB: stays in cache
    big = torch.nn.Sequential(torch.nn.Linear(256, STREAMED_WEIGHT_BYTES // (4 * 256) + 1))
    assert decoding_dtype("auto", small) == torch.float32
    assert decoding_dtype("auto", big) == torch.float16
    assert decoding_dtype("float32", big) == torch.float32
    assert decoding_dtype("float16", small) == torch.float16


BASE = ModelConfig(vocab_size=50, block_size=24, n_layer=2, n_head=4, n_embd=32, dropout=0.0)


def test_a_model_view_shares_everything_but_its_linear_modules():
    torch.manual_seed(0)
    model = GPT(BASE).eval()
    modules_before = dict(model.named_modules())
    view = with_fast_weights(model, torch.float16)
    assert dict(model.named_modules()) == modules_before  # the model is unchanged
    assert isinstance(view.lm_head, FastWeightsLinear) and view.lm_head.linear is model.lm_head
    assert isinstance(view.blocks[1].mlp.fc, FastWeightsLinear)
    assert view.wte is model.wte and view.blocks[0].ln_1 is model.blocks[0].ln_1
    assert {id(p) for p in view.parameters()} == {id(p) for p in model.parameters()}


def test_the_adaptive_softmax_head_reads_its_own_weights():
    config = ModelConfig(
        vocab_size=50,
        block_size=24,
        n_layer=1,
        n_head=4,
        n_embd=32,
        output="adaptive",
        tie_weights=False,
        adaptive_cutoffs="10,30",
    )
    model = GPT(config).eval()
    view = with_fast_weights(model, torch.float16)
    assert view.adaptive_head is model.adaptive_head
    assert isinstance(view.blocks[0].attn.qkv, FastWeightsLinear)


def test_decoding_sees_weights_changed_in_place():
    torch.manual_seed(0)
    model = GPT(BASE).eval()
    view = with_fast_weights(model, torch.float32)
    idx = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        view(idx, cache=model.new_cache(1))  # builds the decoding copy of the output layer
        assert DECODING_COPIES[model.lm_head].weight is not None
        model.lm_head.weight.mul_(2.0)  # an optimizer step would change it in place too
        cached = view(idx, cache=model.new_cache(1))
        torch.testing.assert_close(cached, model(idx), rtol=1e-5, atol=1e-5)
