"""The decoding path of Linear: exact outside `decoding_weights`, close inside, never stale."""

import threading

import pytest
import torch
import torch.nn.functional as F

from tinygpt.model.linear import (
    FEW_ROWS,
    STREAMED_WEIGHT_BYTES,
    Linear,
    decoding_dtype,
    decoding_weights,
)


@pytest.fixture
def layer() -> Linear:
    torch.manual_seed(0)
    return Linear(64, 96, bias=True)


def reference(layer: Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def assert_close_to_float32(out: torch.Tensor, expected: torch.Tensor) -> None:
    """Within float16's rounding of the weights, inputs and outputs (~1e-3 of the largest)."""
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-3 * expected.abs().max().item())


def test_outside_decoding_it_is_exactly_nn_linear(layer):
    x = torch.randn(1, 2, 64)
    with torch.no_grad():
        assert torch.equal(layer(x), reference(layer, x))
    assert not hasattr(layer, "_decoding_weight")  # no copy was made


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_training_and_long_inputs_take_the_plain_path_even_while_decoding(layer, dtype):
    many = torch.randn(FEW_ROWS + 1, 64)
    few = torch.randn(3, 64)
    with decoding_weights(dtype):
        with torch.no_grad():
            assert torch.equal(layer(many), reference(layer, many))
        out = layer(few)  # gradients on: training
        assert torch.equal(out, reference(layer, few))
        out.sum().backward()
    assert layer.weight.grad is not None


def test_float32_decoding_matches_and_float16_is_close(layer):
    x = torch.randn(2, 1, 64)
    expected = reference(layer, x)
    with torch.no_grad():
        with decoding_weights(torch.float32):
            exact = layer(x)
        with decoding_weights(torch.float16):
            half = layer(x)
    torch.testing.assert_close(exact, expected, rtol=1e-6, atol=1e-6)
    assert half.dtype == torch.float32 and not torch.equal(half, expected)
    assert_close_to_float32(half, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_copy_follows_in_place_and_replaced_weights(layer, dtype):
    x = torch.randn(1, 64)
    with torch.no_grad(), decoding_weights(dtype):
        layer(x)  # makes the copy
        layer.weight.mul_(2)  # an optimizer step updates in place
        layer.bias.add_(1)
        assert_close_to_float32(layer(x), reference(layer, x))
        layer.weight = torch.nn.Parameter(torch.randn(96, 64))  # loading a checkpoint
        assert_close_to_float32(layer(x), reference(layer, x))


def test_decoding_precision_belongs_to_the_thread_that_set_it(layer):
    x = torch.randn(1, 64)
    seen = {}

    def other_thread() -> None:
        with torch.no_grad():
            seen["out"] = layer(x)

    with torch.no_grad(), decoding_weights(torch.float16):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert torch.equal(seen["out"], reference(layer, x).detach())


def test_only_the_supported_precisions_are_accepted():
    with pytest.raises(ValueError, match="float16"), decoding_weights(torch.bfloat16):
        pass


def test_auto_reads_float16_only_when_the_weights_outgrow_the_cache():
    small = torch.nn.Sequential(Linear(256, 256))  # 256 KiB: stays in cache
    big = torch.nn.Sequential(Linear(256, STREAMED_WEIGHT_BYTES // (4 * 256) + 1))
    assert decoding_dtype("auto", small) == torch.float32
    assert decoding_dtype("auto", big) == torch.float16
    assert decoding_dtype("float32", big) == torch.float32
    assert decoding_dtype("float16", small) == torch.float16
