"""Faster weights for the few-row products of token-by-token decoding.

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

The decoder runs `with_fast_weights(model, dtype)`: the same model, whose nn.Linear modules are
each seen through a `FastWeightsLinear`. A product of at most FEW_ROWS rows with gradients off
reads the `dtype` copy; anything else (prefill, training, evaluation) is exactly nn.Linear. The
model itself is left as it was. A copy is made once per Linear and kept for every decoder of the
model; it is rebuilt whenever the weight changes (a new tensor, or an in-place update, which
bumps its version counter) and costs the layer's weight size again in float32, half of it in
float16. Only float32 weights get copies: a model already cast to another dtype decodes in its
own.
"""

from __future__ import annotations

import copy
import typing
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinygpt.config import DecodingPrecision

FEW_ROWS = 16  # up to this many rows (sequences x new tokens) count as decoding
DECODING_DTYPES = {"float32": torch.float32, "float16": torch.float16}

PRECISIONS: tuple[str, ...] = typing.get_args(DecodingPrecision)
STREAMED_WEIGHT_BYTES = 16 * 2**20  # more than a 2-core slice of a server CPU keeps in cache

# each Linear's decoding copy, kept while the Linear lives, for every decoder of its model
DECODING_COPIES: weakref.WeakKeyDictionary[nn.Linear, DecodingCopy] = weakref.WeakKeyDictionary()

ModuleT = typing.TypeVar("ModuleT", bound=nn.Module)


def decoding_dtype(precision: str, model: nn.Module) -> torch.dtype:
    """The dtype decoding steps of `model` read weights in: PRECISIONS' "auto" (see above),
    "float16" or "float32"."""
    if precision != "auto":
        return DECODING_DTYPES[precision]
    if next(model.parameters()).device.type != "cpu":
        return torch.float32  # the cache rule above was measured on a CPU, and only there
    weight_bytes = sum(linear.weight.numel() * 4 for _, _, linear in _decoding_linears(model))
    return torch.float16 if weight_bytes > STREAMED_WEIGHT_BYTES else torch.float32


def with_fast_weights(model: ModuleT, dtype: torch.dtype) -> ModuleT:
    """`model` for decoding: the same parameters, buffers and modules, except that each of its
    Linear modules is seen through a FastWeightsLinear reading `dtype` copies. The modules on
    the way to a Linear are shallow copies; `model` itself is unchanged. Build it from a model
    in eval mode, as decoding uses."""
    if dtype not in DECODING_DTYPES.values():
        raise ValueError(f"decoding weights must be one of {list(DECODING_DTYPES)}, not {dtype}")
    if type(model) is nn.Linear:
        return typing.cast(ModuleT, FastWeightsLinear(model, dtype))
    views: dict[int, nn.Module] = {}  # id of a module of `model` -> its copy in the view

    def view_of(module: nn.Module) -> nn.Module:
        if id(module) not in views:
            views[id(module)] = copy.copy(module)
            # its own dict of children, so replacing one leaves `module` as it was
            views[id(module)]._modules = dict(module._modules)
        return views[id(module)]

    for path, name, linear in _decoding_linears(model):
        parent = model
        for step in path:  # copy every module from the root down to the Linear's parent
            child = parent._modules[step]
            view_of(parent)._modules[step] = view_of(child)
            parent = child
        view_of(parent)._modules[name] = FastWeightsLinear(linear, dtype)
    return typing.cast(ModuleT, views.get(id(model), model))


def _decoding_linears(model: nn.Module) -> Iterator[tuple[list[str], str, nn.Linear]]:
    """(path to the parent, name, module) of each nn.Linear of the model's own layers: not the
    adaptive softmax's head and tail, which run in float32 with autocast off (GPT's
    `_full_precision`) and read their own weights."""
    adaptive = getattr(model, "adaptive_head", None)
    skipped = set() if adaptive is None else {id(m) for m in adaptive.modules()}
    for qualified_name, module in model.named_modules():
        if type(module) is nn.Linear and id(module) not in skipped:
            *path, name = qualified_name.split(".")
            yield path, name, module


class FastWeightsLinear(nn.Module):
    """`linear` for decoding: a product of at most FEW_ROWS rows with gradients off reads a
    cached `dtype` copy of the weights; every other product is exactly `linear`'s."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.linear = linear
        self.copy_dtype = dtype
        self.copies = DECODING_COPIES.setdefault(linear, DecodingCopy())

    def forward(self, x: Tensor) -> Tensor:
        linear = self.linear
        if (
            torch.is_grad_enabled()
            or x.numel() > FEW_ROWS * linear.in_features
            or linear.weight.dtype != torch.float32
            or x.dtype != torch.float32  # autocast or a cast input: keep nn.Linear's behaviour
        ):
            return F.linear(x, linear.weight, linear.bias)
        dtype = self.copy_dtype
        weight, bias = self.copies.of(linear.weight, linear.bias, dtype)
        if dtype == torch.float32:
            out = x.reshape(-1, linear.in_features) @ weight  # weight is (in, out)
            if bias is not None:
                out += bias
            return out.view(*x.shape[:-1], linear.out_features)
        return F.linear(x.to(dtype), weight, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"reads {str(self.copy_dtype).removeprefix('torch.')} copies for few rows"


class DecodingCopy:
    """One Linear's weight and bias in a decoding dtype; a float32 weight transposed to
    (in, out). Rebuilt when the weights or the dtype change."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.weight: Tensor | None = None
        self.bias: Tensor | None = None

    def of(
        self, weight: Tensor, bias: Tensor | None, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor | None]:
        key = (weight.data_ptr(), weight._version, dtype, weight.device)
        if bias is not None:
            key += (bias.data_ptr(), bias._version)
        if self.key != key:
            copied = weight.detach().to(dtype)
            self.weight = copied.t().contiguous() if dtype == torch.float32 else copied
            self.bias = None if bias is None else bias.detach().to(dtype)
            self.key = key
        assert self.weight is not None
        return self.weight, self.bias
