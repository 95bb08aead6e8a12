"""nn.Linear, plus a faster path for the few-row products of token-by-token decoding.

Decoding multiplies one row per sequence by every weight matrix, so on a CPU a decoding step is
bound by reading the weights, not by arithmetic. Two things make those reads cheaper:

- layout: with PyTorch's (out, in) layout a one-row float32 product runs at about a third of
  the speed of the (in, out) layout (7.4 vs 2.1 ms for GPT-2's 50k x 256 output layer on this
  project's 2-core EPYC), so float32 decoding multiplies by a transposed, contiguous copy;
- precision: a float16 copy has half the bytes to read. For float16 the (out, in) layout is the
  fast one (0.9 ms for the same layer), so that copy keeps it.

Which pays depends on the model. float16 wins when a step's weights stream from memory: 1.4-1.8x
faster steps for tinystories-small (64 MB of float32 Linear weights, 50k-token output layer).
When they fit in the CPU's caches, the casts to and from float16 cost more than the bytes
saved: baby-shakespeare (3 MB) gains nothing, and is up to 40% slower in float16. So `auto`
picks float16 above STREAMED_WEIGHT_BYTES of float32 Linear weights, on a CPU
(`benchmarks/generate_speed.py` measures both). On a GPU, where a small model's step is bound
by kernel launches rather than bytes, `auto` keeps float32 (not measured: no GPU was at hand).

Inside `decoding_weights(dtype)` (the generation engine enters it around each decoding step), a
product of at most FEW_ROWS rows with gradients off reads such a copy. Everywhere else (training,
evaluation, prefill) the layer is exactly nn.Linear. A copy is made once and rebuilt whenever the
weight changes (a new tensor, or an in-place update, which bumps its version counter); it costs
the layer's weight size again in float32, half of it in float16. Only float32 weights get copies:
a model already cast to another dtype decodes in its own.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinygpt.config import DecodingPrecision

FEW_ROWS = 16  # up to this many rows (sequences x new tokens) count as decoding
DECODING_DTYPES = {"float32": torch.float32, "float16": torch.float16}

PRECISIONS: tuple[str, ...] = typing.get_args(DecodingPrecision)
STREAMED_WEIGHT_BYTES = 16 * 2**20  # more than a 2-core slice of a server CPU keeps in cache

_decoding_dtype: ContextVar[torch.dtype | None] = ContextVar("decoding_dtype", default=None)


@contextmanager
def decoding_weights(dtype: torch.dtype) -> Iterator[None]:
    """Few-row products in this block (this thread) read `dtype` copies of the weights."""
    if dtype not in DECODING_DTYPES.values():
        raise ValueError(f"decoding weights must be one of {list(DECODING_DTYPES)}, not {dtype}")
    token = _decoding_dtype.set(dtype)
    try:
        yield
    finally:
        _decoding_dtype.reset(token)


def decoding_dtype(precision: str, model: nn.Module) -> torch.dtype:
    """The dtype decoding steps of `model` read weights in: PRECISIONS' "auto" (see above),
    "float16" or "float32"."""
    if precision != "auto":
        return DECODING_DTYPES[precision]
    if next(model.parameters()).device.type != "cpu":
        return torch.float32  # the cache rule above was measured on a CPU, and only there
    weight_bytes = sum(
        m.weight.numel() * 4 for m in model.modules() if isinstance(m, Linear)
    )  # as float32
    return torch.float16 if weight_bytes > STREAMED_WEIGHT_BYTES else torch.float32


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        dtype = _decoding_dtype.get()
        if (
            dtype is None
            or torch.is_grad_enabled()
            or x.numel() > FEW_ROWS * self.in_features
            or self.weight.dtype != torch.float32
            or x.dtype != torch.float32  # autocast or a cast input: keep nn.Linear's behaviour
        ):
            return super().forward(x)
        weight, bias = self._decoding_copy(dtype)
        if dtype == torch.float32:
            out = x.reshape(-1, self.in_features) @ weight  # weight is (in, out)
            if bias is not None:
                out += bias
            return out.view(*x.shape[:-1], self.out_features)
        return F.linear(x.to(dtype), weight, bias).to(x.dtype)

    def _decoding_copy(self, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        """(weight, bias) in `dtype`; a float32 weight transposed to (in, out)."""
        weight, bias = self.weight, self.bias
        key = (weight.data_ptr(), weight._version, dtype, weight.device)
        if bias is not None:
            key += (bias.data_ptr(), bias._version)
        if getattr(self, "_decoding_key", None) != key:
            copy = weight.detach().to(dtype)
            self._decoding_weight = copy.t().contiguous() if dtype == torch.float32 else copy
            self._decoding_bias = None if bias is None else bias.detach().to(dtype)
            self._decoding_key = key
        return self._decoding_weight, self._decoding_bias
